// klaviyo-bridge console: progressive enhancements only (every form works without JS).
(function () {
  "use strict";
  var csrf = document.body ? document.body.getAttribute("data-csrf") : "";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function text(el, value) { if (el) { el.textContent = value; } }

  // Confirmation before destructive forms.
  $all("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm") || "Are you sure?")) { ev.preventDefault(); }
    });
  });

  // Data source parameters: show only the ones the chosen source uses.
  var source = $("#f-data_source");
  function syncParams() {
    if (!source) { return; }
    $all("[data-for-sources]").forEach(function (el) {
      var wanted = el.getAttribute("data-for-sources").split(" ");
      el.classList.toggle("hidden", wanted.indexOf(source.value) < 0);
    });
  }
  if (source) { source.addEventListener("change", syncParams); syncParams(); }

  // Schedule: custom cron field only with the "custom" preset; next 5 run times, live.
  var preset = $("#f-preset");
  var cronBox = $("#custom-cron");
  var timer = null;
  function cronValue() {
    if (!preset) { return null; }
    return preset.value === "custom" ? ($("#f-cron") || {}).value || "" : preset.value;
  }
  function refreshRuns() {
    var list = $("#next-runs");
    if (!preset || !list) { return; }
    var params = new URLSearchParams({
      cron: cronValue(), timezone: ($("#f-schedule_timezone") || {}).value || "UTC",
      delay: ($("#f-delay") || {}).value || "0"
    });
    fetch("/api/cron/next?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var err = $("#cron-error");
        list.innerHTML = "";
        if (data.error) { text(err, data.error); if (err) { err.classList.remove("hidden"); } return; }
        if (err) { err.classList.add("hidden"); }
        if (!data.runs.length) { var li = document.createElement("li"); li.textContent = "no scheduled run time: runs only by hand"; list.appendChild(li); }
        data.runs.forEach(function (t) { var li = document.createElement("li"); li.textContent = t; list.appendChild(li); });
        text($("#cron-describe"), data.describe || "");
      })
      .catch(function () { /* the server-rendered list stays */ });
  }
  function scheduleRefresh() { clearTimeout(timer); timer = setTimeout(refreshRuns, 250); }
  if (preset) {
    preset.addEventListener("change", function () {
      if (cronBox) { cronBox.classList.toggle("hidden", preset.value !== "custom"); }
      scheduleRefresh();
    });
    if (cronBox) { cronBox.classList.toggle("hidden", preset.value !== "custom"); }
    ["#f-cron", "#f-schedule_timezone", "#f-delay"].forEach(function (sel) {
      var el = $(sel); if (el) { el.addEventListener("input", scheduleRefresh); }
    });
  }

  // Live job progress: poll the JSON endpoint until the job ends, then reload once.
  var live = $("#job-live");
  if (live) {
    var url = live.getAttribute("data-progress");
    var poll = function () {
      fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (p) {
          text($("#live-status"), p.status);
          text($("#live-elapsed"), p.elapsed_seconds.toFixed(1) + " s");
          text($("#live-rows"), p.rows === null ? "–" : String(p.rows));
          if (p.done) { window.location.reload(); } else { setTimeout(poll, 700); }
        })
        .catch(function () { setTimeout(poll, 2000); });
    };
    setTimeout(poll, 500);
  }
}());
