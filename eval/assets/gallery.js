// gallery.html: filter the item rows (dataset, subject, location: the locations offered narrow to the rows the
// other filters leave), show one method's column or all, sort the rows by a method's metric, switch MONKEY's
// mask overlays on and off. No library, no network.
(function () {
  "use strict";
  const rowFilters = Array.from(document.querySelectorAll("nav select[data-key]")).filter(
    (s) => s.dataset.key !== "method"
  );
  const location = document.getElementById("filter-location");
  const method = document.getElementById("filter-method");
  const sort = document.getElementById("sort");
  const overlay = document.getElementById("overlay");
  const body = document.getElementById("rows");
  const rows = Array.from(body.querySelectorAll("tr.item"));
  const cards = Array.from(document.querySelectorAll("td.card"));
  const shown = document.getElementById("shown");
  const allLocations = Array.from(location.options).slice(1).map((o) => o.value);

  function matches(row, skip) {
    return rowFilters.every((s) => s === skip || s.value === "" || row.dataset[s.dataset.key] === s.value);
  }

  function narrowLocations() {
    // the locations of the rows the other filters leave; a chosen one no longer there goes back to "all"
    const present = new Set(rows.filter((r) => matches(r, location)).map((r) => r.dataset.location));
    const keep = present.has(location.value) ? location.value : "";
    while (location.options.length > 1) location.remove(1);
    for (const value of allLocations.filter((v) => present.has(v))) location.add(new Option(value, value));
    location.value = keep;
  }

  function sortRows() {
    const metric = sort.value;
    const column = metric ? sort.selectedOptions[0].dataset.method : "";
    const key = (row) => {
      const cell = Array.from(row.querySelectorAll("td.card")).find((c) => c.dataset.method === column);
      const value = cell ? parseFloat(cell.getAttribute("data-score-" + metric)) : NaN;
      return Number.isNaN(value) ? -Infinity : value; // rows without the score go last
    };
    const ordered = metric ? rows.slice().sort((a, b) => key(b) - key(a)) : rows; // highest first
    for (const row of ordered) body.appendChild(row);
  }

  function apply() {
    narrowLocations();
    let images = 0;
    for (const row of rows) {
      row.hidden = !matches(row, null);
    }
    for (const cell of document.querySelectorAll("[data-method]")) {
      if (cell.tagName === "OPTION") continue;
      cell.hidden = method.value !== "" && cell.dataset.method !== method.value;
    }
    for (const card of cards) {
      if (!card.hidden && !card.parentElement.hidden) images += 1;
    }
    document.body.classList.toggle("show-overlay", overlay.checked);
    sortRows();
    const visible = rows.filter((r) => !r.hidden).length;
    shown.textContent = visible + " of " + rows.length + " items, " + images + " of " + cards.length + " images";
  }

  for (const control of [...rowFilters, method, sort, overlay]) control.addEventListener("change", apply);
  apply();
})();
