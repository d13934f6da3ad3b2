// Drag and drop onto the upload form: a zone, added only when this script
// runs, that puts a dropped file into the form's file input (the form is
// sent as without it). The plain file input works without this script.
(function () {
  "use strict";
  function start() {
    var input = document.getElementById("file");
    if (!input || !window.DataTransfer) { return; }
    var zone = document.createElement("div");
    zone.id = "drop-zone";
    zone.className = "drop-zone";
    var text = document.createElement("p");
    text.id = "drop-zone-text";
    text.textContent = "Or drop a file here.";
    zone.appendChild(text);
    var holder = input.closest("p") || input;
    holder.parentNode.insertBefore(zone, holder.nextSibling);
    function over(event) {
      event.preventDefault();
      if (event.dataTransfer) { event.dataTransfer.dropEffect = "copy"; }
      zone.classList.add("drop-over");
    }
    zone.addEventListener("dragenter", over);
    zone.addEventListener("dragover", over);
    zone.addEventListener("dragleave", function () { zone.classList.remove("drop-over"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("drop-over");
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || files.length === 0) { return; }
      // One file, as the input takes.
      var one = new DataTransfer();
      one.items.add(files[0]);
      input.files = one.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
      text.textContent = "Chosen: " + files[0].name;
    });
    input.addEventListener("change", function () {
      if (input.files && input.files.length > 0) { text.textContent = "Chosen: " + input.files[0].name; }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
