// Live parts: an element with data-live="URL" is refreshed from URL every data-every seconds
// (polling; the server renders the HTML). data-until="SELECTOR" stops once the new content
// contains SELECTOR (a command or payment that reached its final state). A 401 means the
// session expired: reload, which leads to the sign-in page.
(function () {
  "use strict";
  function poll(el) {
    var url = el.getAttribute("data-live");
    var every = Math.max(1, parseFloat(el.getAttribute("data-every") || "5")) * 1000;
    var until = el.getAttribute("data-until");
    function tick() {
      fetch(url, {credentials: "same-origin", headers: {"X-Console-Live": "1"}}).then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html !== null && html !== undefined) {
          el.innerHTML = html;
          el.setAttribute("data-refreshed", String(Date.now()));
          if (until && el.querySelector(until)) { return; }
        }
        setTimeout(tick, every);
      }).catch(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(poll);
    confirmForms();
  });
})();
