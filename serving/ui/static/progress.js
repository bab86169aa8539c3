// Live progress of a running cycle: polls a small JSON endpoint, no page reload.
(function () {
  "use strict";
  var box = document.getElementById("live-progress");
  if (!box) { return; }
  var url = box.getAttribute("data-url");
  var field = function (name) { return box.querySelector('[data-field="' + name + '"]'); };
  var bar = box.querySelector("progress");
  var running = box.querySelector(".running");
  function eta(seconds) {
    if (seconds === null || seconds === undefined) { return "—"; }
    var s = Math.round(seconds);
    return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
  }
  function show(p) {
    box.setAttribute("data-running", p.running ? "yes" : "no");
    field("idle").hidden = p.running;
    running.hidden = !p.running;
    bar.hidden = !(p.running && p.total);
    if (!p.running) { return; }
    field("run_id").textContent = "#" + p.run_id + " (" + p.status + ")";
    field("stage").textContent = p.stage || "—";
    field("step").textContent = p.step === null ? "—" : p.step;
    field("total").textContent = p.total === null ? "—" : p.total;
    field("loss").textContent = p.loss === null ? "—" : p.loss.toFixed(4);
    field("eta").textContent = eta(p.eta_s);
    if (p.total) { bar.max = p.total; bar.value = p.step || 0; }
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) { if (p) { show(p); } })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, 1500); });
  }
  poll();
})();
