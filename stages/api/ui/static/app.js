// jetqa's web UI: what changes while one looks. The pages follow the
// server's events (EventSource); nothing here polls.
"use strict";

// Needle areas over a screenshot, placed in the image's own pixels.
function placeAreas(root) {
  for (const fig of root.querySelectorAll("figure.shot")) {
    const img = fig.querySelector("img");
    const place = () => {
      const w = img.naturalWidth, h = img.naturalHeight;
      if (!w || !h) return;
      for (const a of fig.querySelectorAll(".area")) {
        a.style.left = (100 * a.dataset.x / w) + "%";
        a.style.top = (100 * a.dataset.y / h) + "%";
        a.style.width = (100 * a.dataset.w / w) + "%";
        a.style.height = (100 * a.dataset.h / h) + "%";
        a.classList.add("placed");
      }
    };
    if (img.complete) place(); else img.addEventListener("load", place);
  }
}

// The job list: rows come and change as the jobs' events arrive.
function followJobs(table) {
  const body = table.querySelector("tbody");
  const events = new EventSource(table.dataset.stream);
  window.addEventListener("pagehide", () => events.close());
  events.onopen = () => { table.dataset.live = "1"; };
  events.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    const old = document.getElementById("job-" + job.id);
    const t = document.createElement("template");
    t.innerHTML = job.html.trim();
    const row = t.content.firstElementChild;
    if (old) {
      // An event that changes nothing shown leaves the row be, so a
      // pointer on its link stays there.
      if (!old.isEqualNode(row)) old.replaceWith(row);
    } else if (table.dataset.first) {
      // Newest first: a new job goes above every older one.
      let before = null;
      for (const r of body.querySelectorAll("tr.job")) {
        if (Number(r.id.slice(4)) < job.id) { before = r; break; }
      }
      const none = body.querySelector("tr.none");
      if (none) none.remove();
      body.insertBefore(row, before);
    }
  });
  events.addEventListener("gone", (e) => {
    const old = document.getElementById("job-" + JSON.parse(e.data).id);
    if (old) old.remove();
  });
  events.addEventListener("reload", () => { events.close(); location.reload(); });
}

// Swaps an element's content for a fragment the server renders, after a
// burst of events has settled.
function refresher(el, url, after) {
  let timer = null, busy = false, again = false;
  const load = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const res = await fetch(url, { cache: "no-store" });
      if (res.ok) {
        el.innerHTML = await res.text();
        if (after) after(el);
      }
    } finally {
      busy = false;
      if (again) { again = false; load(); }
    }
  };
  return () => { clearTimeout(timer); timer = setTimeout(load, 150); };
}

// The test overview: redrawn when a job it may show changes.
function followOverview(el) {
  const events = new EventSource(el.dataset.stream);
  window.addEventListener("pagehide", () => events.close());
  const refresh = refresher(el, el.dataset.part);
  events.addEventListener("job", refresh);
  events.addEventListener("gone", refresh);
  events.addEventListener("reload", () => { events.close(); location.reload(); });
}

// A job that has not ended: its status follows its events, its live view
// the worker's screen.
function followJob(el) {
  const id = el.dataset.id;
  const status = document.getElementById("job-status");
  const refreshStatus = refresher(status, "/tests/" + id + "?part=1", placeAreas);
  const timeline = document.getElementById("timeline");
  const refreshTimeline = refresher(timeline, timeline.dataset.src);
  const refresh = () => { refreshStatus(); refreshTimeline(); };
  const events = new EventSource("/api/v1/jobs/" + id + "/events?after=" + el.dataset.seq);
  const live = new EventSource("/tests/" + id + "/live");
  window.addEventListener("pagehide", () => { events.close(); live.close(); });
  events.onmessage = refresh;
  for (const kind of ["job.assigned.v1", "job.started.v1", "module.started.v1", "module.finished.v1",
    "job.paused.v1", "job.resumed.v1", "tests.finished.v1", "job.cancel_requested.v1", "job.unassigned.v1"]) {
    events.addEventListener(kind, refresh);
  }
  events.addEventListener("job.finished.v1", () => {
    events.close();
    live.close();
    location.reload();
  });
  const screen = document.getElementById("live-screen");
  live.addEventListener("screen", (e) => {
    const f = JSON.parse(e.data);
    if (f.png) screen.src = f.png;
    document.getElementById("live-module").textContent = f.module || "–";
    document.getElementById("live-paused").textContent = f.paused ? "paused: " + (f.paused.reason || f.paused.at) : "";
  });
  live.addEventListener("end", () => live.close());
}

// Logs load when opened; the event timeline when the page opens.
function lazyLoad() {
  for (const d of document.querySelectorAll("details.log")) {
    d.addEventListener("toggle", async () => {
      const pre = d.querySelector("pre");
      if (!d.open || pre.dataset.loaded) return;
      const res = await fetch(d.dataset.src);
      pre.textContent = res.ok ? await res.text() : "not available: " + res.status;
      pre.dataset.loaded = "1";
    });
  }
  const timeline = document.getElementById("timeline");
  if (timeline) refresher(timeline, timeline.dataset.src)();
}

document.addEventListener("DOMContentLoaded", () => {
  placeAreas(document);
  lazyLoad();
  const jobs = document.getElementById("jobs");
  if (jobs) followJobs(jobs);
  const overview = document.getElementById("overview");
  if (overview) followOverview(overview);
  const job = document.getElementById("job");
  if (job && job.dataset.follow) followJob(job);
});
