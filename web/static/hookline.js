// Hookline: progressive enhancement only. Without this file every page still works,
// except the copy buttons (hidden until this runs), one-click field picking and the
// guard against a form posted twice by a double click.
(function () {
  "use strict";

  function selectText(el) {
    if (el.select) { el.select(); return; }
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  function flag(button, text) {
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = text;
    button.classList.add("copied");
    setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1500);
  }

  // Copy buttons: the clipboard API when allowed, else select the text so Ctrl+C works.
  function initCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var target = document.querySelector(button.dataset.copy);
      if (!target) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        var text = (target.value !== undefined ? target.value : target.textContent).trim();
        var fallback = function () {
          selectText(target);
          var ok = false;
          try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
          flag(button, ok ? "Copied" : "Selected: press Ctrl+C");
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(function () { flag(button, "Copied"); }, fallback);
        } else {
          fallback();
        }
      });
    });
  }

  // Field picker: a click fills the next empty field row instead of posting the form.
  var RESERVED = ["trigger", "steps", "fields", "now", "loop", "range", "true", "false", "none"];

  function suggestName(path, taken) {
    var segs = path.replace(/^\$/, "").match(/\[\s*['"][^'"]+['"]\s*\]|[^.\[\]'"]+/g) || [];
    segs = segs.map(function (s) { return s.replace(/^\[\s*['"]|['"]\s*\]$/g, "").trim(); })
      .filter(function (s) { return s && s !== "*" && !/^\d+$/.test(s); });
    var base = (segs.length ? segs[segs.length - 1] : "field").replace(/\W/g, "_").replace(/^_+|_+$/g, "");
    base = base.replace(/^[\d_]+/, "").slice(0, 50) || "field";
    if (RESERVED.indexOf(base.toLowerCase()) >= 0) { base += "_value"; }
    var name = base, n = 2;
    while (taken.indexOf(name) >= 0) { name = base + "_" + n; n += 1; }
    return name;
  }

  function input(row, part) { return row.querySelector("[name$='-" + part + "']"); }

  function blankRow(tbody) {
    var rows = tbody.querySelectorAll("tr.field-row");
    for (var i = 0; i < rows.length; i++) {
      if (!input(rows[i], "name").value.trim() && !input(rows[i], "path").value.trim()) { return rows[i]; }
    }
    return null;
  }

  function appendRow(tbody) {
    var rows = tbody.querySelectorAll("tr.field-row");
    var last = rows[rows.length - 1];
    var index = rows.length;
    var row = last.cloneNode(true);
    row.dataset.index = String(index);
    row.querySelectorAll("[name],[id],[for],[aria-describedby]").forEach(function (el) {
      ["name", "id", "for", "aria-describedby"].forEach(function (attr) {
        var v = el.getAttribute(attr);
        if (v) { el.setAttribute(attr, v.replace(/^fields-\d+-/, "fields-" + index + "-")); }
      });
      if (el.tagName === "INPUT") { el.value = ""; el.removeAttribute("aria-invalid"); }
      if (el.name === "remove_field") { el.value = String(index); }
    });
    row.querySelectorAll(".error").forEach(function (el) { el.remove(); });
    row.querySelectorAll(".has-error").forEach(function (el) { el.classList.remove("has-error"); });
    tbody.appendChild(row);
    return row;
  }

  function initPicker() {
    var tbody = document.querySelector("#field-rows tbody");
    if (!tbody) { return; }
    document.querySelectorAll("button.pick[data-path]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        event.preventDefault();
        var taken = Array.prototype.map.call(tbody.querySelectorAll("[name$='-name']"),
          function (el) { return el.value.trim(); });
        var row = blankRow(tbody) || appendRow(tbody);
        input(row, "path").value = button.dataset.path;
        input(row, "name").value = suggestName(button.dataset.path, taken);
        if (!blankRow(tbody)) { appendRow(tbody); }
        input(row, "name").focus();
        flag(button, "✓ " + button.dataset.path);
      });
    });
  }

  // A select whose choice re-renders the page (the editor's sample event: its paths come from
  // the server): choosing submits through its button, which without this file is clicked by hand.
  function initSubmitOnChange() {
    document.querySelectorAll("select[data-submit-with]").forEach(function (select) {
      var button = document.getElementById(select.dataset.submitWith);
      if (!button) { return; }
      button.hidden = true;
      select.addEventListener("change", function () { button.click(); });
    });
  }

  // De-duplication: the id field's placeholder follows "drop repeated deliveries by".
  function initDedupe() {
    var select = document.getElementById("delivery-dedupe_by");
    var key = document.getElementById("delivery-dedupe_key");
    if (!select || !key) { return; }
    select.addEventListener("change", function () {
      var text = key.getAttribute("data-placeholder-" + select.value);
      if (text) { key.placeholder = text; }
    });
  }

  // Choice blocks (sender presets, alert actions): show only the chosen one's options.
  // Without this every block shows, and only the chosen one is saved.
  function initChoiceBlocks() {
    document.querySelectorAll("select[data-blocks]").forEach(function (select) {
      var blocks = document.querySelectorAll("[data-block-of='" + select.dataset.blocks + "']");
      var sync = function () {
        blocks.forEach(function (block) { block.hidden = block.dataset.block !== select.value; });
      };
      select.addEventListener("change", sync);
      sync();
    });
    document.querySelectorAll(".no-js-note").forEach(function (el) { el.hidden = true; });
  }

  // Live preview: as the user types, post the form (unsaved) and show what each step would
  // send for the sample event. Without this file, the preview's own button does the same.
  function initPreview() {
    var panel = document.getElementById("preview");
    var form = document.getElementById("recipe-form");
    if (!panel || !form || !window.fetch) { return; }
    panel.querySelectorAll(".no-js-only").forEach(function (el) { el.hidden = true; });
    var timer = null, sent = 0;
    var refresh = function () {
      var mine = ++sent;
      fetch(panel.dataset.previewUrl, { method: "POST", body: new FormData(form), credentials: "same-origin" })
        .then(function (resp) { return resp.ok ? resp.text() : Promise.reject(resp.status); })
        .then(function (html) {
          if (mine !== sent) { return; }  // an answer to an older edit: a newer one is coming
          var body = document.getElementById("preview-body");
          if (body) { body.outerHTML = html; }
          panel.classList.remove("stale");
        }, function () { panel.classList.add("stale"); });
    };
    var soon = function () { clearTimeout(timer); timer = setTimeout(refresh, 300); };
    form.addEventListener("input", soon);
    form.addEventListener("change", soon);
    document.querySelectorAll("button.pick[data-path]").forEach(function (b) { b.addEventListener("click", soon); });
  }

  // One submit per form: a double click (or a second, impatient one while the answer is on
  // its way) must not post twice (a test message sent twice, a run replayed twice). Once a
  // POST form is submitted, its later submits are cancelled until the page is left, and its
  // submit buttons look busy. Nothing is disabled: a disabled button would drop its own
  // name=value (Run again's "version") from the data being posted. Only a submit that really
  // happens locks (one blocked by a required field fires no submit event); forms that do not
  // leave the page (downloads, target=_blank) opt out with data-allow-resubmit.
  var BUSY = "data-submitting";

  function submitButtons(form) {
    return Array.prototype.filter.call(form.elements, function (el) {
      return el.type === "submit" || el.type === "image";
    });
  }

  function lock(form, submitter) {
    form.setAttribute(BUSY, "");
    form.setAttribute("aria-busy", "true");
    submitButtons(form).forEach(function (button) {
      button.classList.add("busy");
      button.setAttribute("aria-disabled", "true");
      if (button === submitter) { button.setAttribute("aria-busy", "true"); }
    });
  }

  function unlock(form) {
    form.removeAttribute(BUSY);
    form.removeAttribute("aria-busy");
    submitButtons(form).forEach(function (button) {
      button.classList.remove("busy");
      button.removeAttribute("aria-disabled");
      button.removeAttribute("aria-busy");
    });
  }

  function leavesThePage(form, submitter) {
    var attr = function (name, own) {
      return submitter && submitter.hasAttribute(own) ? submitter.getAttribute(own) : form.getAttribute(name);
    };
    var method = (attr("method", "formmethod") || "get").toLowerCase();
    var target = (attr("target", "formtarget") || "").toLowerCase();
    return method === "post" && (target === "" || target === "_self") && !form.hasAttribute("data-allow-resubmit");
  }

  function initSubmitOnce() {
    // On the document, so it runs after any handler of the form itself: a submit another
    // handler cancelled did not happen, and must not lock the form.
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var submitter = event.submitter || null;
      if (!leavesThePage(form, submitter)) { return; }
      if (form.hasAttribute(BUSY)) { event.preventDefault(); return; }
      if (event.defaultPrevented) { return; }
      lock(form, submitter);
    });
    // Back (or forward) to a page kept in the browser's memory: its forms are usable again.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) { return; }
      document.querySelectorAll("form[" + BUSY + "]").forEach(unlock);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    initCopy(); initPicker(); initSubmitOnChange(); initDedupe(); initChoiceBlocks(); initPreview(); initSubmitOnce();
  });
}());
