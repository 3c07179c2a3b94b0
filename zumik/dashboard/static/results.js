/* Zumik dashboard: a running batch's failed lines as they happen, and its results page by
   page (GET /dashboard/api/batches/<id>/results). DOM built with textContent only. */
(function () {
  "use strict";
  var POLL = 2000, PAGE = 20;
  if (window.__zumikResults) return;  /* the detail region is swapped in again at the end */
  window.__zumikResults = true;

  function cell(row, text, mono) {
    var td = document.createElement("td");
    td.textContent = text;
    if (mono) td.className = "mono";
    row.appendChild(td);
  }

  function failure(line) {
    var error = line.error || {};
    var response = line.response || {};
    var body = response.body || {};
    var inner = (body && body.error) || {};
    return {
      code: error.code || inner.code || inner.type || (response.status_code ? "HTTP " + response.status_code : ""),
      message: error.message || inner.message || ""
    };
  }

  function answer(line) {
    if (line.error) return line.error.message || line.error.code || "";
    var body = (line.response || {}).body || {};
    var choice = (body.choices || [])[0];
    if (choice && choice.message && typeof choice.message.content === "string") return choice.message.content.slice(0, 160);
    return JSON.stringify(body).slice(0, 160);
  }

  function get(url, params) {
    var query = Object.keys(params).filter(function (k) { return params[k]; })
      .map(function (k) { return k + "=" + encodeURIComponent(params[k]); }).join("&");
    return fetch(url + "?" + query, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); });
  }

  /* Failed lines of a running batch, appended as they are journaled. */
  var failedAfter = null;
  function pollFailures() {
    var section = document.querySelector("[data-live-failures]");
    if (!section) return;
    if (document.hidden) { setTimeout(pollFailures, POLL); return; }
    get(section.dataset.liveFailures, {outcome: "failed", limit: "100", after: failedAfter})
      .then(function (page) {
        var current = document.querySelector("[data-live-failures]");
        if (!current) return;
        var rows = current.querySelector("[data-rows]");
        page.data.forEach(function (line) {
          var tr = document.createElement("tr");
          var f = failure(line);
          cell(tr, line.custom_id, true);
          cell(tr, f.code, true);
          cell(tr, f.message);
          rows.appendChild(tr);
        });
        if (rows.children.length) current.querySelector("[data-empty]").hidden = true;
        failedAfter = page.last_id;
        setTimeout(pollFailures, page.has_more ? 0 : POLL);
      })
      .catch(function () { setTimeout(pollFailures, POLL * 2); });
  }

  /* Results page by page: each click reads the next page after the last one shown. */
  var resultsAfter = null;
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-results-next]");
    if (!button) return;
    var section = button.closest("[data-results]");
    button.disabled = true;
    get(section.dataset.results, {limit: String(PAGE), after: resultsAfter})
      .then(function (page) {
        var rows = section.querySelector("[data-rows]");
        while (rows.firstChild) rows.removeChild(rows.firstChild);
        page.data.forEach(function (line) {
          var tr = document.createElement("tr");
          var status = line.response ? String(line.response.status_code) : (line.error || {}).code || "";
          cell(tr, line.custom_id, true);
          cell(tr, status, true);
          cell(tr, answer(line));
          rows.appendChild(tr);
        });
        resultsAfter = page.last_id;
        section.querySelector("[data-results-note]").textContent = page.data.length
          ? page.data.length + " results" + (page.has_more ? "" : " (the latest so far)")
          : "No new results yet.";
        button.textContent = "Next results";
        button.disabled = false;
      })
      .catch(function () { button.disabled = false; });
  });

  document.addEventListener("DOMContentLoaded", pollFailures);
})();
