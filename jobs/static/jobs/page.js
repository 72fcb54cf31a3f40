/* The Jobs page, live: applies the Server-Sent Events of /jobs/events/ to the page (jobs.live).
 *
 * cells     a job's changing cells (status, progress, attempt, times, actions): replaced by id
 * rows      whole rows of jobs that changed: replaced where the page shows them
 * new-rows  rows of jobs just created that match the page's filters: added on top (or replaced)
 * remove    ids of rows to take away
 * cards     the statistics changed: fetch them again (the server sends this at most every 2 s)
 * refresh   too much happened to send: fetch the list and the cards again
 *
 * The browser resends the last event's id when it reconnects and the server replays what was
 * missed; if the connection is lost for good, a new one starts from that id. Without push
 * (no EventSource, or it keeps failing) the page polls instead. Times are shown in the
 * reader's time zone. Only htmx (served by the product) is needed; no build step.
 */
(function () {
  "use strict";

  var POLL_MS = 2000;

  function localize(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      var today = new Date().toDateString() === when.toDateString();
      el.textContent = today
        ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
        : when.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
      el.title = when.toLocaleString() + " (" + ago(now - when.getTime()) + ")";
    });
  }

  function ago(ms) {
    var s = Math.round(ms / 1000);
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }

  document.addEventListener("DOMContentLoaded", function () { localize(document); });

  // An action's answer says what happened in #job-message. htmx looks for that out-of-band
  // target from the pressed button, which the live feed may have replaced meanwhile (the
  // change is pushed before the answer arrives), and a detached button's events reach no
  // listener: so watch the request itself, from when it is sent, and put the message in place.
  document.addEventListener("htmx:beforeSend", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.classList || !elt.classList.contains("job-act")) return;
    var xhr = event.detail.xhr;
    xhr.addEventListener("loadend", function () {
      var template = document.createElement("template");
      template.innerHTML = xhr.responseText || "";
      var message = template.content.getElementById("job-message");
      var old = document.getElementById("job-message");
      if (!message || !old) return;
      message.removeAttribute("hx-swap-oob");
      old.replaceWith(message);
    });
  });
  document.addEventListener("htmx:afterSettle", function (event) { localize(event.target); });

  var list = document.getElementById("job-list");
  if (!list || !list.dataset.liveUrl) return;
  var state = document.getElementById("job-live-state");
  var lastId = null;
  var source = null;
  var failures = 0;
  var pollTimer = null;

  function say(text, mode) {
    if (!state) return;
    state.textContent = text;
    state.dataset.mode = mode;
  }

  function parse(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return Array.prototype.slice.call(template.content.children);
  }

  function put(el) {
    var old = document.getElementById(el.id);
    if (!old) return false;
    old.replaceWith(el);
    htmx.process(el);
    localize(el);
    return true;
  }

  function addOnTop(row) {
    if (put(row) || list.dataset.older || list.dataset.detail) return;
    var body = document.getElementById("job-rows");
    if (!body) return;
    body.insertBefore(row, body.firstChild);
    htmx.process(row);
    localize(row);
    var empty = document.getElementById("job-empty");
    if (empty) empty.remove();
  }

  function refreshList() {
    if (list.dataset.rowsUrl) {
      htmx.ajax("GET", list.dataset.rowsUrl, { target: "#job-list-body", swap: "outerHTML" });
    }
    refreshCards();
  }

  function refreshCards() {
    if (list.dataset.cardsUrl && document.getElementById("job-cards")) {
      htmx.ajax("GET", list.dataset.cardsUrl, { target: "#job-cards", swap: "outerHTML" });
    }
  }

  var handlers = {
    cells: function (data) { parse(data).forEach(put); },
    rows: function (data) { parse(data).forEach(put); },
    "new-rows": function (data) { parse(data).forEach(addOnTop); },
    remove: function (data) {
      data.split("\n").forEach(function (id) {
        var row = document.getElementById(id.trim());
        if (row) row.remove();
      });
    },
    cards: refreshCards,
    refresh: refreshList,
  };

  function startPolling(reason) {
    if (pollTimer) return;
    say(reason || "Updating every 2 s", "polling");
    pollTimer = setInterval(refreshList, POLL_MS);
  }

  function liveUrl() {
    var url = list.dataset.liveUrl;
    if (!lastId) return url;
    return url.replace(/([?&])since=[^&]*/, "$1since=" + encodeURIComponent(lastId));
  }

  function connect() {
    source = new EventSource(liveUrl());
    source.onopen = function () {
      failures = 0;
      if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
      say("Live", "live");
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (or went away for good): start again from the last event seen.
        failures += 1;
        if (failures >= 3) startPolling("Live updates unavailable: updating every 2 s");
        else say("Reconnecting…", "reconnecting");
        setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, failures)));
      } else {
        say("Reconnecting…", "reconnecting");  // the browser reconnects by itself, with the last id
      }
    };
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) {
        if (event.lastEventId) lastId = event.lastEventId;
        handlers[name](event.data);
      });
    });
  }

  if (list.dataset.poll || typeof EventSource === "undefined") startPolling();
  else connect();
})();
