// invsync upload page: drag and drop onto the file picker, and the progress view.
// No inline scripts anywhere (the Content-Security-Policy forbids them); nothing external.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
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
    var bar = document.getElementById("progress-bar");
    var poll = function () {
      fetch(box.getAttribute("data-url"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (u) {
          if (u.status !== "applying") { window.location.reload(); return; }
          var p = u.progress || {};
          if (p.phase === "waiting") {
            text.textContent = "Waiting: another run is updating this store (" + (p.holder || "another run") +
              "). Your changes are sent as soon as it finishes.";
          } else if (p.phase === "sending") {
            text.textContent = "Sending: " + p.batches_done + " of " + p.batches_total + " batches (" +
              p.items_done + " of " + p.items_total + " items).";
            bar.max = Math.max(p.batches_total, 1); bar.value = p.batches_done;
          } else {
            text.textContent = "Checking the store's levels against your preview…";
          }
          window.setTimeout(poll, 1000);
        })
        .catch(function () { window.setTimeout(poll, 3000); });
    };
    window.setTimeout(poll, 500);
  }
});
