// invsync upload page: drag and drop onto the file picker, local times, and the progress view.
// No inline scripts anywhere (the Content-Security-Policy forbids them); nothing external.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Times are sent in UTC; show them in the merchant's own time zone.
  Array.prototype.forEach.call(document.querySelectorAll("time[data-local]"), function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when.getTime())) {
      el.textContent = when.toLocaleString([], {dateStyle: "medium", timeStyle: "short"});
    }
  });
  var zone = document.getElementById("dropzone");
  var input = document.getElementById("file");
  var label = document.getElementById("file-name");
  if (zone && input) {
    var show = function () {
      if (input.files && input.files.length && label) { label.textContent = input.files[0].name; }
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
    });
  }
  var box = document.getElementById("progress");
  if (box) {
    var text = document.getElementById("progress-text");
    var why = document.getElementById("progress-why");
    var bar = document.getElementById("progress-bar");
    var left = function (s) {
      if (s === null || s === undefined) { return ""; }
      if (s < 60) { return " About " + Math.max(s, 1) + " seconds left."; }
      return " About " + Math.round(s / 60) + " minutes left.";
    };
    var poll = function () {
      fetch(box.getAttribute("data-url"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (u) {
          if (u.status !== "applying" && u.status !== "cancelling") { window.location.reload(); return; }
          var p = u.progress || {};
          if (u.status === "cancelling") {
            text.textContent = "Cancelling: nothing more is sent.";
          } else if (p.phase === "waiting") {
            text.textContent = "Waiting: another update of this store is running. Your changes are sent as soon as it finishes.";
          } else if (p.phase === "sending") {
            text.textContent = "Sending: " + p.items_done.toLocaleString() + " of " +
              p.items_total.toLocaleString() + " items." + left(p.seconds_left);
            bar.max = Math.max(p.items_total, 1); bar.value = p.items_done;
          } else {
            text.textContent = "Checking the store's stock against your preview…";
          }
          if (why) { why.textContent = p.slowed || ""; }
          window.setTimeout(poll, 1000);
        })
        .catch(function () { window.setTimeout(poll, 3000); });
    };
    window.setTimeout(poll, 500);
  }
});
