// keyward dashboard: draws the usage charts with uPlot (vendored, see
// uPlot-LICENSE.txt) from the JSON series of /ui/api/…/series. No inline
// script anywhere: the Content-Security-Policy allows only this file.
"use strict";

(function () {
  var WIDTH = { minute: 60, hour: 3600, day: 86400 };
  var AUTH = ["MALFORMED", "NOT_FOUND", "DISABLED", "EXPIRED", "REVOKED", "ROTATED"];

  // One value per bucket from since to until: buckets without traffic are 0.
  function columns(series) {
    var step = WIDTH[series.granularity] || 3600;
    var from = Date.parse(series.since) / 1000, to = Date.parse(series.until) / 1000;
    var byT = {};
    series.points.forEach(function (p) { byT[Date.parse(p.t) / 1000] = p; });
    var out = [];
    for (var t = from; t < to; t += step) out.push([t, byT[t] || null]);
    return out;
  }

  function sum(o, names) {
    var n = 0;
    names.forEach(function (k) { n += (o && o[k]) || 0; });
    return n;
  }

  var CHARTS = {
    requests: { title: "Requests", unit: "per bucket", series: [
      ["Requests", "#1f5fbf", function (p) { return p ? p.requests : 0; }],
      ["Denied", "#b3261e", function (p) { return p ? p.denied : 0; }]] },
    errors: { title: "Error rate", unit: "%", dots: true, series: [
      ["Denied %", "#b3261e", function (p) { return p && p.requests ? 100 * p.denied / p.requests : null; }],
      ["4xx/5xx %", "#8a5a00", function (p) {
        var all = p ? sum(p.status, ["1xx", "2xx", "3xx", "4xx", "5xx"]) : 0;
        return all ? 100 * sum(p.status, ["4xx", "5xx"]) / all : null;
      }]] },
    bytes: { title: "Bytes", unit: "bytes", series: [
      ["In", "#1f7a3a", function (p) { return p ? p.bytes_in : 0; }],
      ["Out", "#6b3fa0", function (p) { return p ? p.bytes_out : 0; }]] },
    auth: { title: "Failed authentication", unit: "per bucket", series: [
      ["Failed auth", "#b3261e", function (p) { return p ? sum(p.outcomes, AUTH) : 0; }]] }
  };

  // The figure's inner width (the grid decides it), for the plot.
  function chartWidth(fig) {
    return Math.max(240, fig.clientWidth - 16);
  }

  function draw(box, series) {
    var cols = columns(series);
    var xs = cols.map(function (c) { return c[0]; });
    box.textContent = "";
    box.dataset.points = String(series.points.length);
    box.dataset.requests = String(series.totals.requests);
    var plots = [];
    // Every figure first, so the grid settles before a plot measures its width.
    var figs = [];
    box.dataset.charts.split(" ").forEach(function (name) {
      var def = CHARTS[name];
      if (!def) return;
      var fig = document.createElement("figure");
      fig.className = "chart chart-" + name;
      var cap = document.createElement("figcaption");
      cap.textContent = def.title + " (" + def.unit + ", by " + series.granularity + ")";
      fig.appendChild(cap);
      fig.setAttribute("aria-label", def.title + ": " + series.totals.requests + " requests, " +
        series.totals.denied + " denied in this range");
      box.appendChild(fig);
      figs.push([def, fig]);
    });
    figs.forEach(function (f) {
      var def = f[0], fig = f[1];
      var data = [xs];
      var opts = {
        width: chartWidth(fig), height: 180,
        scales: { x: { time: true } },
        series: [{}],
        axes: [{}, { size: 60 }],
        legend: { show: true }
      };
      def.series.forEach(function (s) {
        data.push(cols.map(function (c) { return s[2](c[1]); }));
        opts.series.push({ label: s[0], stroke: s[1], width: 2, spanGaps: false, points: { show: !!def.dots, size: 6 } });
      });
      plots.push([new uPlot(opts, data, fig), fig]);
    });
    window.addEventListener("resize", function () {
      plots.forEach(function (p) { p[0].setSize({ width: chartWidth(p[1]), height: 180 }); });
    });
  }

  function load(box) {
    box.textContent = "Loading…";
    fetch(box.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("the server answered " + r.status);
        return r.json();
      })
      .then(function (series) { draw(box, series); })
      .catch(function (e) {
        box.textContent = "The chart could not be loaded: " + e.message;
        box.dataset.error = "1";
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".charts[data-src]").forEach(load);
    document.querySelectorAll("[data-select-on-focus]").forEach(function (el) {
      el.addEventListener("focus", function () { el.select(); });
    });
  });
})();
