// The timeline: one lane per pod over the last five minutes, as this page saw it in its looks
// at /v1/cluster: ready, not ready, unreachable or gone (no longer in DNS) as coloured spans,
// and a mark where the pod came back at another template revision. Used by app.js.
"use strict";

const MIN_WINDOW_S = 60;

const timeline = {
  lanes: new Map(), // pod name -> {ordinal, spans: [{from, to, state, revision}]}
};

// One look: extend each pod's last span, or start a new one where its state or revision changed.
function recordTimeline(pods, now, windowS) {
  for (const pod of pods) {
    let lane = timeline.lanes.get(pod.name);
    if (!lane) {
      lane = { ordinal: pod.ordinal, spans: [] };
      timeline.lanes.set(pod.name, lane);
    }
    lane.ordinal = pod.ordinal;
    const last = lane.spans[lane.spans.length - 1];
    const revision = pod.revision || (last && last.revision) || null;
    if (last && last.state === pod.state && last.revision === revision) {
      last.to = now;
    } else {
      lane.spans.push({ from: last ? last.to : now, to: now, state: pod.state, revision });
    }
  }
  for (const [name, lane] of timeline.lanes) {
    lane.spans = lane.spans.filter((span) => span.to >= now - windowS);
    if (!lane.spans.length) timeline.lanes.delete(name);
  }
}

function timelineClock(seconds) {
  return new Date(seconds * 1000).toTimeString().slice(0, 8);
}

function timelineSpan(name, span, left, right) {
  const item = document.createElement("i");
  item.className = "span " + span.state;
  item.dataset.state = span.state;
  item.dataset.revision = span.revision || "";
  item.style.left = left + "%";
  item.style.width = Math.max(0.4, right - left) + "%";
  const when = `${timelineClock(span.from)}–${timelineClock(span.to)}`;
  const what = span.state.replace("-", " ");
  item.title = `${name} ${what}, ${when}` + (span.revision ? `, revision ${span.revision}` : "");
  return item;
}

function timelineMark(name, span, left) {
  const mark = document.createElement("b");
  mark.className = "mark";
  mark.dataset.revision = span.revision;
  mark.style.left = left + "%";
  mark.title = `${name} at revision ${span.revision} from ${timelineClock(span.from)}`;
  return mark;
}

// The lanes cover what the page saw, at least a minute and at most `windowS` seconds.
function renderTimeline(container, now, windowS) {
  const seen = [...timeline.lanes.values()].map((lane) => lane.spans[0].from);
  const width = Math.min(windowS, Math.max(MIN_WINDOW_S, now - Math.min(now, ...seen)));
  const start = now - width;
  const at = (t) => Math.min(100, Math.max(0, ((t - start) / width) * 100));
  const lanes = [...timeline.lanes.entries()].sort(
    ([a, x], [b, y]) => (x.ordinal ?? 1e9) - (y.ordinal ?? 1e9) || a.localeCompare(b),
  );
  const rows = lanes.map(([name, lane]) => {
    const row = document.createElement("div");
    row.className = "lane";
    row.dataset.pod = name;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    const track = document.createElement("div");
    track.className = "track";
    let previous = null;
    for (const span of lane.spans) {
      track.append(timelineSpan(name, span, at(span.from), at(span.to)));
      if (previous && span.revision && previous !== span.revision) {
        track.append(timelineMark(name, span, at(span.from)));
      }
      previous = span.revision || previous;
    }
    row.append(label, track);
    return row;
  });
  const axis = document.createElement("div");
  axis.className = "lane axis";
  const from = document.createElement("span");
  from.textContent = timelineClock(start);
  const to = document.createElement("span");
  to.textContent = "now";
  const scale = document.createElement("div");
  scale.className = "scale";
  scale.append(from, to);
  axis.append(document.createElement("span"), scale);
  container.replaceChildren(...rows, axis);
}
