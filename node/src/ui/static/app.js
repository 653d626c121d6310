// Breakwater dashboard: live feed over server-sent events, copy buttons.
// Served from the node itself (CSP default-src 'self'); no inline script.
(function () {
  "use strict";
  if (document.body && document.body.dataset.live === "1" && window.EventSource) {
    var source = new EventSource("/ui/events");
    source.addEventListener("update", function () {
      document.body.dispatchEvent(new Event("bw-update"));
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
  function copied(button) {
    var before = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = before; }, 1500);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) { return; }
    var text = button.getAttribute("data-copy");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button); });
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      document.body.removeChild(area);
      copied(button);
    }
  });
})();
