// Forms with data-confirm ask first (no inline handlers: the dashboard's CSP allows only scripts from the service).
document.addEventListener("submit", function (event) {
  "use strict";
  var question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) { event.preventDefault(); }
});
