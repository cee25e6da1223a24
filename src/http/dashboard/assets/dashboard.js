// Keeps an open dashboard page current: every few seconds the page is fetched again
// and its main part replaced when it changed, unless the operator is typing in it or it
// is hidden.
// Pages work the same without it (reload to refresh).
"use strict";
(function () {
  var EVERY_MS = 2000;
  var main = document.getElementById("live");
  var stamp = document.getElementById("updated");
  if (!main || main.dataset.live !== "on" || !window.fetch || !window.DOMParser) return;
  // The main part as the server last sent it: an unchanged page is left alone, so a
  // button about to be pressed or a selection is not swapped out from under the operator.
  var shown = main.innerHTML;

  function busy() {
    var active = document.activeElement;
    return document.hidden || (active && active !== document.body && main.contains(active) &&
      /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName));
  }

  function openDetails() {
    var open = [];
    main.querySelectorAll("details[open]").forEach(function (d, i) { open.push(i); });
    return open;
  }

  function refresh() {
    if (busy()) return schedule();
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (next && next.innerHTML !== shown && !busy()) {
          shown = next.innerHTML;
          var open = openDetails();
          main.replaceChildren.apply(main, Array.prototype.slice.call(document.importNode(next, true).childNodes));
          var details = main.querySelectorAll("details");
          open.forEach(function (i) { if (details[i]) details[i].open = true; });
          if (stamp) stamp.textContent = "Updated " + new Date().toISOString().slice(11, 19) + ".";
        }
      })
      .catch(function (e) { if (stamp) stamp.textContent = "Not updated: " + e.message + "."; })
      .then(schedule);
  }

  function schedule() { window.setTimeout(refresh, EVERY_MS); }
  schedule();
})();
