// Live progress on a job's page: follows GET /api/v1/events?job=ID and updates the page in place.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root || root.dataset.finished === "true" || !window.EventSource) return;
  var finished = ["succeeded", "failed", "dead", "cancelled"];
  var source = new EventSource("/api/v1/events?job=" + encodeURIComponent(root.dataset.id));
  function text(id, value) {
    var node = document.getElementById(id);
    if (node) node.textContent = value;
  }
  function update(event) {
    var job = JSON.parse(event.data);
    var percent = Math.round(job.progress || 0);
    var state = document.getElementById("job-state");
    if (state) state.innerHTML = '<span class="state state-' + job.state + '">' + job.state + "</span>";
    var bar = document.getElementById("job-progress-bar");
    if (bar) bar.style.width = percent + "%";
    text("job-progress", percent + "%");
    text("job-note", job.progress_note || "");
    text("job-attempts", String(job.attempts));
    if (job.result) text("job-result", job.result);
    if (job.error_type) text("job-error", job.error_type + ": " + (job.error_message || ""));
    if (job.finished_at) text("job-finished", job.finished_at);
    if (finished.indexOf(job.state) >= 0) {
      source.close();
      root.dataset.finished = "true";
    }
  }
  ["enqueued", "started", "retrying", "succeeded", "failed", "dead", "cancelled"].forEach(function (name) {
    source.addEventListener(name, update);
  });
})();
