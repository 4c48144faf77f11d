// One participant's questionnaire: screens from the embedded JSON, answers kept in localStorage
// (so a reload resumes), exported as a JSON file. No network, no library: runs from file://.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("study-data").textContent);
  const key = "monkey-study:" + data.study_id + ":" + data.participant;
  const screens = data.screens;
  const $ = (id) => document.getElementById(id);
  let state = { index: 0, answers: {}, started: null };
  try { state = JSON.parse(localStorage.getItem(key)) || state; } catch (e) { /* private mode: no resume */ }
  let shownAt = 0;

  function save() {
    try { localStorage.setItem(key, JSON.stringify(state)); } catch (e) { /* ignore */ }
  }

  function show(section) {
    for (const id of ["intro", "question", "done"]) $(id).hidden = id !== section;
  }

  function render() {
    if (state.index >= screens.length) { finish(); return; }
    const screen = screens[state.index];
    show("question");
    $("progress").textContent = "Question " + (state.index + 1) + " of " + screens.length;
    $("subject").src = screen.subject;
    $("prompt").textContent = screen.prompt;
    const answer = state.answers[screen.question];
    const box = $("options");
    box.replaceChildren();
    screen.options.forEach((src, position) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "option" + (answer && answer.choice === position ? " selected" : "");
      button.id = "option-" + position;
      button.dataset.position = String(position);
      const img = document.createElement("img");
      img.src = src;
      img.alt = "choice " + (position + 1);
      button.appendChild(img);
      button.addEventListener("click", () => choose(position));
      box.appendChild(button);
    });
    $("next").disabled = !answer;
    $("back").disabled = state.index === 0;
    shownAt = Date.now();
  }

  function choose(position) {
    const screen = screens[state.index];
    const before = state.answers[screen.question];
    state.answers[screen.question] = {
      choice: position, ms: (before ? before.ms : 0) + (Date.now() - shownAt), screen: state.index + 1,
    };
    shownAt = Date.now();
    save();
    render();
  }

  function response() {
    return {
      format: data.format, version: data.version, study_id: data.study_id, participant: data.participant,
      started: state.started, exported: new Date().toISOString(), user_agent: navigator.userAgent,
      answers: screens.filter((s) => s.question in state.answers).map((s) => ({
        question: s.question, choice: state.answers[s.question].choice,
        screen: state.answers[s.question].screen, ms: state.answers[s.question].ms,
      })),
    };
  }

  function finish() {
    show("done");
    $("progress").textContent = "Done: " + Object.keys(state.answers).length + " of " + screens.length + " answered";
    $("export-text").value = JSON.stringify(response(), null, 1);
  }

  function exportAnswers() {
    const text = JSON.stringify(response(), null, 1);
    $("export-text").value = text;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    link.download = data.study_id + "-" + data.participant + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  $("start").addEventListener("click", () => {
    state.started = state.started || new Date().toISOString();
    save();
    render();
  });
  $("next").addEventListener("click", () => { state.index += 1; save(); render(); });
  $("back").addEventListener("click", () => { state.index = Math.max(0, state.index - 1); save(); render(); });
  $("review").addEventListener("click", () => { state.index = 0; save(); render(); });
  $("export").addEventListener("click", exportAnswers);
  if (state.started) render(); else show("intro");
})();
