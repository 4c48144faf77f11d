// Filters for gallery.html: a card is shown when it matches every select ("" = all). No library, no network.
(function () {
  "use strict";
  const selects = Array.from(document.querySelectorAll("nav select"));
  const cards = Array.from(document.querySelectorAll(".card"));
  const shown = document.getElementById("shown");

  function apply() {
    let count = 0;
    for (const card of cards) {
      const match = selects.every((s) => s.value === "" || card.dataset[s.dataset.key] === s.value);
      card.hidden = !match;
      if (match) count += 1;
    }
    shown.textContent = count + " of " + cards.length + " images";
  }

  for (const select of selects) select.addEventListener("change", apply);
  apply();
})();
