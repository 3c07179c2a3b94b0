/* Zumik dashboard: live progress, region refresh, uploads. No dependencies, no build. */
(function () {
  "use strict";
  var POLL_ACTIVE = 2000, POLL_IDLE = 10000;

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  /* Every text cell the poll's row has a value for: counts, usage, durations, rate. */
  function update(root, row) {
    var badge = root.querySelector('[data-field="status"]');
    if (badge) {
      badge.textContent = row.status_label;
      badge.className = "badge badge-" + row.badge;
    }
    Array.prototype.forEach.call(root.querySelectorAll("[data-field]"), function (el) {
      var value = el.dataset.field === "status" ? null : row[el.dataset.field];
      if (typeof value === "string" && el.textContent !== value) el.textContent = value;
    });
    if (row.status !== "cancelling") settleCancelNotice(row.status);
    var bar = root.querySelector('[data-field="bar"]');
    if (bar) {
      bar.setAttribute("aria-valuenow", String(row.completed + row.failed));
      bar.setAttribute("aria-valuemax", String(row.total));
      bar.setAttribute("aria-valuetext", row.text);
      var rects = bar.querySelectorAll("rect");
      rects[0].setAttribute("width", String(row.ok_pct));
      rects[1].setAttribute("x", String(row.ok_pct));
      rects[1].setAttribute("width", String(row.fail_pct));
    }
    root.dataset.active = row.active ? "1" : "0";
  }

  /* Fetch this page again and swap one region (server-rendered, so escaped by Jinja). */
  function refreshRegion(name) {
    return fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html", "X-Zumik-Poll": "1"}})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector('[data-region="' + name + '"]');
        var old = document.querySelector('[data-region="' + name + '"]');
        if (fresh && old) old.replaceWith(document.importNode(fresh, true));
      });
  }

  function pollBatches() {
    var rows = Array.prototype.slice.call(document.querySelectorAll("[data-batch]"));
    var list = document.querySelector("[data-batch-list]");
    var active = rows.filter(function (r) { return r.dataset.active === "1"; });
    if (!active.length && !(list && list.dataset.newest)) return;
    var delay = active.length ? POLL_ACTIVE : POLL_IDLE;
    setTimeout(function tick() {
      if (document.hidden) { setTimeout(tick, delay); return; }
      var ids = active.map(function (r) { return r.dataset.batch; }).join(",");
      fetch("/dashboard/api/batches?ids=" + encodeURIComponent(ids), {credentials: "same-origin", headers: {"X-Zumik-Poll": "1"}})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (data) {
          var finished = false;
          active.forEach(function (root) {
            var row = data.batches[root.dataset.batch];
            if (!row) return;
            update(root, row);
            if (!row.active) finished = true;
          });
          if (list && list.dataset.newest && data.newest && data.newest > list.dataset.newest) {
            var note = document.querySelector("[data-new-batches]");
            if (note) note.hidden = false;
          }
          var detail = document.querySelector("[data-detail]");
          if (detail && finished) return refreshRegion("detail").then(pollBatches);
          pollBatches();
        })
        .catch(function () { setTimeout(pollBatches, POLL_IDLE); });
    }, delay);
  }

  /* The "Cancelling..." notice lasts while the batch cancels: once it reads cancelled (even
     before this page loaded) it says so instead. */
  function settleCancelNotice(status) {
    Array.prototype.forEach.call(document.querySelectorAll('[data-flash="cancelling"]'), function (el) {
      el.textContent = "Cancelled (" + status + "): finished lines are kept.";
      el.dataset.flash = "done";
    });
  }

  /* "just now", "5 min ago", "in 3 h": kept current as time passes (same rules as present.ago). */
  function duration(seconds) {
    seconds = Math.floor(seconds);
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) {
      var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60);
      return m ? h + " h " + m + " min" : h + " h";
    }
    return Math.floor(seconds / 86400) + " d " + Math.floor(seconds % 86400 / 3600) + " h";
  }

  function refreshAgo() {
    var now = Date.now() / 1000;
    Array.prototype.forEach.call(document.querySelectorAll("[data-ago]"), function (el) {
      var ts = Date.parse(el.dataset.ago) / 1000;
      if (isNaN(ts)) return;
      var delta = now - ts, text = Math.abs(delta) < 5 ? "just now"
        : (delta > 0 ? duration(delta) + " ago" : "in " + duration(-delta));
      if (el.textContent !== text) el.textContent = text;
    });
  }

  function setupUpload() {
    var form = document.querySelector("form[data-upload]");
    if (!form) return;
    var input = form.querySelector('input[type="file"]');
    var status = form.querySelector(".upload-status");
    function say(text, kind) {
      status.textContent = text;
      status.className = "upload-status " + (kind || "");
    }
    function send(file) {
      var body = new FormData();
      body.append("purpose", "batch");
      body.append("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) say("Uploading " + file.name + ": " + Math.round(100 * e.loaded / e.total) + "%");
      };
      xhr.onload = function () {
        var answer = null;
        try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = null; }
        if (xhr.status === 200 && answer && answer.id) {
          say("Uploaded " + answer.filename + " as " + answer.id + ".", "ok");
          refreshRegion("files").then(function () { return refreshRegion("quota"); });
        } else {
          var message = answer && answer.error ? answer.error.message : "Upload failed (HTTP " + xhr.status + ").";
          say(message, "error");
        }
        input.value = "";
      };
      xhr.onerror = function () { say("Upload failed: the server could not be reached.", "error"); };
      say("Uploading " + file.name + "…");
      xhr.send(body);
    }
    input.addEventListener("change", function () { if (input.files.length) send(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (type) {
      form.addEventListener(type, function (e) { e.preventDefault(); form.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      form.addEventListener(type, function (e) { e.preventDefault(); form.classList.remove("over"); });
    });
    form.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); if (input.files.length) send(input.files[0]); });
  }

  function setupRefresh() {
    var region = document.querySelector("[data-refresh]");
    if (!region) return;
    var name = region.dataset.region, every = Number(region.dataset.refresh) || 5000;
    (function loop() {
      setTimeout(function () {
        if (document.hidden) return loop();
        refreshRegion(name).then(loop, loop);
      }, every);
    })();
  }

  /* The plan page: create the batch with the API's JSON body (window, priority, budget). */
  function setupCreate() {
    var form = document.querySelector("form[data-create]");
    if (!form) return;
    var status = form.querySelector(".upload-status");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var body = {input_file_id: form.dataset.file, endpoint: form.dataset.endpoint,
                  completion_window: form.elements.completion_window.value || "24h",
                  priority: form.elements.priority.value};
      if (form.elements.max_cost.value) body.max_cost = Number(form.elements.max_cost.value);
      if (form.elements.max_total_tokens.value) body.max_total_tokens = Number(form.elements.max_total_tokens.value);
      status.textContent = "Creating…";
      fetch(form.action, {method: "POST", credentials: "same-origin",
                          headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
                          body: JSON.stringify(body)})
        .then(function (r) { return r.json().then(function (a) { return [r.status, a]; }); })
        .then(function (got) {
          if (got[0] === 200 && got[1].id) { location.href = "/dashboard/batches/" + got[1].id; return; }
          status.textContent = got[1] && got[1].error ? got[1].error.message : "Create failed (HTTP " + got[0] + ").";
          status.className = "upload-status error";
        }, function () { status.textContent = "The server could not be reached."; status.className = "upload-status error"; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var detail = document.querySelector("[data-detail]");
    if (detail && detail.dataset.status && detail.dataset.status !== "cancelling") {
      settleCancelNotice(detail.dataset.status);
    }
    pollBatches();
    setInterval(refreshAgo, 10000);
    setupUpload();
    setupRefresh();
    setupCreate();
  });
})();
