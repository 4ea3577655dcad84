// A small time-series line chart drawn on a canvas: no library.
//
// drawChart(canvas, {
//   series: [{name, color, points: [[t, value or null], ...]}],   // t in seconds, ascending
//   now, window,        // the x axis shows [now - window, now]
//   gap,                // a line breaks where two points are further apart than this (seconds)
// })
"use strict";

const CHART_FONT = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";

function niceCeiling(value) {
  if (!(value > 0)) return 0.25;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function shortNumber(value) {
  const round = (v) => String(Math.round(v * 100) / 100);
  if (value >= 1e6) return round(value / 1e6) + "M";
  if (value >= 1e3) return round(value / 1e3) + "k";
  return round(value);
}

function drawChart(canvas, options) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = CHART_FONT;

  const left = 44, right = 10, top = 8, bottom = 20;
  const plotW = Math.max(1, width - left - right);
  const plotH = Math.max(1, height - top - bottom);
  const start = options.now - options.window;
  const x = (t) => left + ((t - start) / options.window) * plotW;

  let max = 0;
  for (const s of options.series) {
    for (const [t, v] of s.points) {
      if (v !== null && t >= start && v > max) max = v;
    }
  }
  const yMax = 4 * niceCeiling((max * 1.05) / 4); // four grid steps of a round size
  const y = (v) => top + plotH - (v / yMax) * plotH;

  // Grid and labels.
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const value = (yMax * i) / 4;
    const py = Math.round(y(value)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(left + plotW, py);
    ctx.stroke();
    ctx.fillText(shortNumber(value), left - 6, py);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let back = 0; back <= options.window; back += 60) {
    const px = Math.round(x(options.now - back)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(px, top);
    ctx.lineTo(px, top + plotH);
    ctx.stroke();
    ctx.fillText(back === 0 ? "now" : "-" + back / 60 + "m", px, top + plotH + 5);
  }

  // The series: a line, broken where data is missing, and a dot on the last value.
  let empty = true;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top - 4, plotW + 4, plotH + 8);
  ctx.clip();
  for (const s of options.series) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.beginPath();
    let previous = null;
    let last = null;
    for (const [t, v] of s.points) {
      if (v === null || t < start - options.gap) {
        previous = null;
        continue;
      }
      if (previous === null || t - previous > options.gap) ctx.moveTo(x(t), y(v));
      else ctx.lineTo(x(t), y(v));
      previous = t;
      last = [t, v];
      empty = false;
    }
    ctx.stroke();
    if (last !== null && options.now - last[0] <= options.gap) {
      ctx.beginPath();
      ctx.arc(x(last[0]), y(last[1]), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  ctx.restore();
  if (empty) {
    ctx.fillStyle = "#9ca3af";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(options.emptyText || "no data yet", left + plotW / 2, top + plotH / 2);
  }
}
