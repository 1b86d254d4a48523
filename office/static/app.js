/* The office's map page: complaints on a Leaflet map, a filtered list beside it, the
 * fleet's health, and (logged in) each complaint's status.
 *
 * What it asks the office (office/web.py; all JSON, errors as 4xx {"error": "..."} shown
 * in #message):
 *   GET  api/config                        map centre, zoom, tiles (or null), classes,
 *                                          statuses, who is logged in
 *   GET  api/complaints.geojson?FILTERS    the markers and the list
 *   GET  api/complaints.csv?FILTERS        the export link (never fetched here)
 *   GET  api/heat?FILTERS                  [[lat, lon, weight], ...] for the heat layer
 *   GET  api/complaints/ID                 a popup's history
 *   POST api/complaints/ID/status          {"status", "note"}: the complaint's detail back
 *   POST api/login {"user", "password"}, POST api/logout
 *   GET  api/fleet                         the fleet panel and the vehicles' markers
 * FILTERS are class, status (comma lists; left out when every box is ticked), from, to
 * (YYYY-MM-DD), bbox (minlon,minlat,maxlon,maxlat, with "only the map's view") and
 * vehicle. Paths are relative to the page, so an office behind a proxy's sub-path works.
 *
 * Complaints are refreshed every COMPLAINTS_EVERY_MS and the fleet every FLEET_EVERY_MS.
 * A refresh changes only the markers whose complaint changed, so an open popup (and a
 * note being typed in it) survives it. Everything a person reads is built with
 * textContent from i18n.js's words: nothing from the server is parsed as HTML.
 */
(function () {
  "use strict";

  var t = I18N.t;
  var COMPLAINTS_EVERY_MS = 30000;
  var FLEET_EVERY_MS = 15000;
  // More rows than this make the list slow to build and no easier to read; the map and
  // the CSV export still have them all.
  var LIST_MAX = 1000;
  // Statuses after which a complaint needs nothing more: their markers are drawn faded.
  var DONE = { resolved: true, rejected: true, duplicate: true };

  var state = {
    config: null,
    user: null,
    features: {},       // id -> GeoJSON feature, as last loaded
    order: [],          // ids, newest last_seen first
    markers: {},        // id -> L.Marker in the cluster group
    selected: null,     // id of the complaint whose popup is open
    popupEls: {},       // id -> the popup's root element while it is open
    fleet: [],
    loadSeq: 0,         // a reply to an older request than the newest is dropped
    heatSeq: 0,
    fitted: false,      // the first load fits the map to the complaints, once
    tiles: "none",      // "none" | "ok" | "unreachable"
    netError: false
  };

  var map, cluster, unitLayer, heatLayer = null, tilesNote, legend;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") node.textContent = v;
        else if (k === "className") node.className = v;
        else if (k in node && typeof v !== "string") node[k] = v;
        else node.setAttribute(k, v === true ? "" : v);
      });
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  /* A name safe inside a CSS class (classes and statuses come from the server). */
  function token(s) { return String(s).toLowerCase().replace(/[^a-z0-9_-]/g, "_"); }

  // ---- the server ---------------------------------------------------------------

  function ApiError(message, status) { this.message = message; this.status = status; }

  /* The JSON the office answers, or a rejection with an ApiError whose message is the
   * server's {"error"} (else the HTTP status) and status 0 when it could not be reached. */
  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!resp.ok) {
          var msg = data && data.error ? data.error : t("error.http", { status: resp.status });
          throw new ApiError(msg, resp.status);
        }
        return data;
      });
    }, function () {
      throw new ApiError(t("error.network"), 0);
    });
  }

  function qs(params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]).replace(/%2C/gi, ","));
    });
    return parts.length ? "?" + parts.join("&") : "";
  }

  // ---- #message -----------------------------------------------------------------

  var messageTimer = null;

  function showMessage(text, kind) {
    var box = $("#message");
    $("#message-text").textContent = text;
    box.className = kind || "info";
    box.hidden = false;
    clearTimeout(messageTimer);
    if (kind !== "error") messageTimer = setTimeout(hideMessage, 4000);
  }

  function hideMessage() { $("#message").hidden = true; }

  function showError(err, prefix) {
    var text = err && err.message ? err.message : String(err);
    showMessage(prefix ? prefix + ": " + text : text, "error");
    if (err && err.status === 0) state.netError = true;
  }

  /* A call that worked after the server could not be reached takes that message away. */
  function reachable() {
    if (state.netError) {
      state.netError = false;
      if ($("#message-text").textContent === t("error.network")) hideMessage();
    }
  }

  // ---- formatting ---------------------------------------------------------------

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  /* This browser's local time as 2025-05-14 10:30 in both languages: day and month
   * never in doubt. */
  function fmtTime(iso) {
    if (!iso) return t("none");
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function ago(iso) {
    if (!iso) return t("none");
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    var s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
    if (s < 90) return t("ago.s", { n: s });
    if (s < 90 * 60) return t("ago.m", { n: Math.round(s / 60) });
    if (s < 36 * 3600) return t("ago.h", { n: Math.round(s / 3600) });
    return t("ago.d", { n: Math.round(s / 86400) });
  }

  function fmtNumber(v, digits) {
    if (typeof v !== "number" || !isFinite(v)) return t("none");
    return v.toLocaleString(I18N.locale(), { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  function fmtYesNo(v) {
    if (v === true) return t("yes");
    if (v === false) return t("no");
    return t("none");
  }

  function fmtDisk(mb) {
    if (typeof mb !== "number") return t("none");
    return mb >= 1024 ? fmtNumber(mb / 1024, 1) + " GB" : fmtNumber(mb, 0) + " MB";
  }

  /* Complaint ids are UUIDv7s, whose first digits are the time they were made and so much
   * alike: their last 8 (random) digits tell them apart on one page. */
  function shortId(id) { return "#" + String(id).slice(-8); }

  function classLabel(c) { return t("class." + c); }
  function statusLabel(s) { return t("status." + s); }

  // ---- filters ------------------------------------------------------------------

  function buildFilters() {
    var cfg = state.config;
    var cls = $("#filter-class");
    $all("label", cls).forEach(function (n) { n.remove(); });
    cfg.classes.forEach(function (c) {
      cls.appendChild(el("label", { className: "check" }, [
        el("input", { type: "checkbox", name: "class", value: c, checked: true }),
        el("span", { className: "swatch cls-" + token(c) }),
        el("span", { "data-i18n": "class." + c, text: classLabel(c) })
      ]));
    });
    var st = $("#filter-status");
    $all("label", st).forEach(function (n) { n.remove(); });
    cfg.statuses.forEach(function (s) {
      st.appendChild(el("label", { className: "check" }, [
        el("input", { type: "checkbox", name: "status", value: s, checked: true }),
        el("span", { "data-i18n": "status." + s, text: statusLabel(s) })
      ]));
    });
  }

  function ticked(name) {
    return $all("input[name=" + name + "]").filter(function (i) { return i.checked; })
      .map(function (i) { return i.value; });
  }

  /* The query for the current filters, or null when a whole group is unticked and so
   * nothing can match. */
  function filterParams() {
    var params = {};
    var groups = [["class", "classes"], ["status", "statuses"]];
    for (var i = 0; i < groups.length; i++) {
      var chosen = ticked(groups[i][0]);
      if (chosen.length === 0) return null;
      if (chosen.length < state.config[groups[i][1]].length) params[groups[i][0]] = chosen.join(",");
    }
    if ($("#filter-from").value) params.from = $("#filter-from").value;
    if ($("#filter-to").value) params.to = $("#filter-to").value;
    if ($("#filter-area").checked) {
      var b = map.getBounds();
      params.bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]
        .map(function (v) { return v.toFixed(6); }).join(",");
    }
    if ($("#filter-vehicle").value) params.vehicle = $("#filter-vehicle").value;
    return params;
  }

  function updateCsvLink(params) {
    var link = $("#csv-link");
    if (params === null) {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
    } else {
      link.href = "api/complaints.csv" + qs(params);
      link.removeAttribute("aria-disabled");
    }
  }

  function resetFilters() {
    $all("input[name=class], input[name=status]").forEach(function (i) { i.checked = true; });
    $("#filter-from").value = "";
    $("#filter-to").value = "";
    $("#filter-area").checked = false;
    $("#filter-vehicle").value = "";
    loadComplaints();
  }

  // ---- complaints ---------------------------------------------------------------

  function loadComplaints() {
    var params = filterParams();
    updateCsvLink(params);
    loadHeat(params);
    var seq = ++state.loadSeq;
    if (params === null) {
      setFeatures([]);
      return Promise.resolve();
    }
    return api("GET", "api/complaints.geojson" + qs(params)).then(function (fc) {
      if (seq !== state.loadSeq) return;
      reachable();
      setFeatures((fc && fc.features) || []);
    }, function (err) {
      if (seq === state.loadSeq) showError(err);
    });
  }

  function featureId(f) {
    return String(f.id !== undefined && f.id !== null ? f.id : f.properties.id);
  }

  function markerIcon(p, id) {
    var cls = "complaint-marker cls-" + token(p["class"]) + " status-" + token(p.status);
    if (DONE[p.status]) cls += " done";
    if (state.selected === id) cls += " selected";
    return L.divIcon({ className: cls, iconSize: [18, 18], html: "" });
  }

  function tagMarker(m, id) {
    var icon = m.getElement();
    if (icon) icon.setAttribute("data-id", id);
  }

  function makeMarker(f, id) {
    var c = f.geometry.coordinates;
    var m = L.marker([c[1], c[0]], {
      icon: markerIcon(f.properties, id), title: classLabel(f.properties["class"]), riseOnHover: true
    });
    m.bindPopup("", { minWidth: 320, maxWidth: 360, autoPanPadding: [30, 30] });
    m.on("add", function () { tagMarker(m, id); });
    m.on("popupopen", function (e) { onPopupOpen(id, e.popup); });
    m.on("popupclose", function () { onPopupClose(id); });
    return m;
  }

  function sameProps(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  /* Puts the loaded features on the map and in the list, changing only what changed. */
  function setFeatures(features) {
    var next = {};
    var toAdd = [], toRemove = [];
    features.forEach(function (f) {
      if (!f || !f.geometry || !f.geometry.coordinates) return;
      var id = featureId(f);
      next[id] = f;
      var old = state.features[id];
      var m = state.markers[id];
      if (m && old && sameProps(old.geometry, f.geometry)) {
        if (!sameProps(old.properties, f.properties)) {
          m.setIcon(markerIcon(f.properties, id));
          tagMarker(m, id);
          if (state.popupEls[id]) fillPopupInfo(state.popupEls[id], f.properties);
        }
      } else {
        if (m) toRemove.push(m);
        m = makeMarker(f, id);
        state.markers[id] = m;
        toAdd.push(m);
      }
    });
    Object.keys(state.markers).forEach(function (id) {
      if (!next[id]) {
        toRemove.push(state.markers[id]);
        delete state.markers[id];
      }
    });
    if (toRemove.length) cluster.removeLayers(toRemove);
    if (toAdd.length) cluster.addLayers(toAdd);
    state.features = next;
    state.order = Object.keys(next).sort(function (a, b) {
      var la = next[a].properties.last_seen || "", lb = next[b].properties.last_seen || "";
      return la < lb ? 1 : la > lb ? -1 : 0;
    });
    renderList();
    if (!state.fitted && state.order.length && !$("#filter-area").checked) {
      state.fitted = true;
      map.fitBounds(cluster.getBounds(), { padding: [40, 40], maxZoom: 17, animate: false });
    }
  }

  function renderList() {
    var list = $("#list");
    list.textContent = "";
    $("#list-count").textContent = t("list.count", { n: state.order.length });
    if (state.order.length === 0) {
      list.appendChild(el("li", { className: "list-note", text: t("list.empty") }));
      return;
    }
    state.order.slice(0, LIST_MAX).forEach(function (id) {
      var p = state.features[id].properties;
      var meta = [fmtTime(p.last_seen), t("list.sightings", { n: p.sightings || 0 })];
      if (p.vehicles && p.vehicles.length) meta.push(p.vehicles.join(", "));
      list.appendChild(el("li", {
        className: "complaint-item" + (state.selected === id ? " selected" : ""),
        "data-id": id, tabindex: "0", role: "button"
      }, [
        el("span", { className: "swatch cls-" + token(p["class"]) }),
        el("span", { className: "name", text: classLabel(p["class"]) }),
        el("span", { className: "status-badge status-" + token(p.status), text: statusLabel(p.status) }),
        el("span", { className: "meta", text: meta.join(" · ") })
      ]));
    });
    if (state.order.length > LIST_MAX) {
      list.appendChild(el("li", { className: "list-note", text: "… +" + (state.order.length - LIST_MAX) }));
    }
  }

  /* From the list: bring the complaint's marker into view (out of its cluster) and open
   * its popup.
   *
   * markercluster's zoomToShowLayer calls back on the moveend after its own pan or zoom; one
   * asked for while the map is still zooming (the first load's fit, a click on a cluster)
   * can wait for a move that never comes. So a focus waits for the map to stand still,
   * checks that the popup opened, and tries again; the last try goes straight to the marker
   * at the deepest zoom, where no cluster hides it. Only the newest focus may open a popup:
   * an older try's callback can still fire on a later move. */
  var focusSeq = 0;

  function focusComplaint(id, tries, seq) {
    var m = state.markers[id];
    if (!m) return;
    tries = tries || 0;
    if (seq === undefined) seq = ++focusSeq;
    if (seq !== focusSeq) return;
    if (map._animatingZoom || cluster._inZoomAnimation) {
      setTimeout(function () { focusComplaint(id, tries, seq); }, 100);
      return;
    }
    var open = function () {
      if (seq === focusSeq && state.markers[id] === m && !m.isPopupOpen()) m.openPopup();
    };
    if (tries >= 3) {
      map.once("moveend", open);
      map.setView(m.getLatLng(), map.getMaxZoom(), { animate: false });
      open();
      return;
    }
    cluster.zoomToShowLayer(m, open);
    setTimeout(function () {
      if (seq === focusSeq && !m.isPopupOpen()) focusComplaint(id, tries + 1, seq);
    }, 700);
  }

  function markSelected(id) {
    var prev = state.selected;
    state.selected = id;
    [prev, id].forEach(function (x) {
      if (x !== null && state.markers[x] && state.features[x]) {
        state.markers[x].setIcon(markerIcon(state.features[x].properties, x));
        tagMarker(state.markers[x], x);
      }
    });
    $all(".complaint-item").forEach(function (li) {
      var on = li.getAttribute("data-id") === id;
      li.classList.toggle("selected", on);
      if (on && li.scrollIntoView) li.scrollIntoView({ block: "nearest" });
    });
  }

  // ---- popups -------------------------------------------------------------------

  function imageFigure(url, captionKey, imgClass, linked) {
    var fig = el("figure", null, [el("figcaption", { "data-i18n": captionKey, text: t(captionKey) })]);
    if (!url) {
      fig.appendChild(el("div", { className: "missing", text: t("popup.no_image") }));
      return fig;
    }
    var img = el("img", { className: imgClass, src: url, alt: t(captionKey), loading: "eager" });
    img.addEventListener("error", function () {
      img.replaceWith(el("div", { className: "missing", text: t("popup.image_missing") }));
    });
    fig.appendChild(linked ? el("a", { href: url, target: "_blank", rel: "noopener", title: t("popup.image.open") }, [img]) : img);
    return fig;
  }

  function infoRow(key, value, cls) {
    return el("tr", null, [
      el("th", { text: t(key) }),
      el("td", null, [el("span", { className: cls || null, text: value })])
    ]);
  }

  /* The popup's facts, rewritten in place when the complaint changes. */
  function fillPopupInfo(root, p) {
    var table = $(".popup-info", root);
    table.textContent = "";
    var body = el("tbody");
    body.appendChild(infoRow("popup.class", classLabel(p["class"])));
    body.appendChild(infoRow("popup.score", fmtNumber(p.score, 2)));
    body.appendChild(infoRow("popup.first_seen", fmtTime(p.first_seen)));
    body.appendChild(infoRow("popup.last_seen", fmtTime(p.last_seen)));
    body.appendChild(infoRow("popup.vehicles", (p.vehicles || []).join(", ") || t("none")));
    body.appendChild(infoRow("popup.sightings", String(p.sightings !== undefined ? p.sightings : t("none"))));
    var status = infoRow("popup.status", statusLabel(p.status),
      "popup-status-text status-badge status-" + token(p.status));
    $(".popup-status-text", status).setAttribute("data-status", p.status);
    body.appendChild(status);
    if (p.duplicate_of) {
      var orig = p.duplicate_of;
      var link = el("a", { href: "#", className: "popup-original", title: String(orig), text: shortId(orig) });
      link.addEventListener("click", function (e) { e.preventDefault(); focusComplaint(String(orig)); });
      body.appendChild(el("tr", null, [el("th", { text: t("popup.duplicate_of") }), el("td", null, [link])]));
    }
    table.appendChild(body);
    var sel = $(".popup-status", root);
    if (sel && !sel.matches(":focus")) sel.value = p.status;
  }

  function fillHistory(root, history) {
    var list = $(".popup-history", root);
    list.textContent = "";
    (history || []).slice().reverse().forEach(function (h) {
      var parts = [fmtTime(h.at), statusLabel(h.status)];
      if (h.by) parts.push(h.by);
      var text = parts.join(" · ") + (h.note ? " — " + h.note : "");
      list.appendChild(el("li", { text: text }));
    });
    $(".popup-history-title", root).hidden = list.children.length === 0;
  }

  function buildPopup(id) {
    var f = state.features[id];
    var p = f.properties;
    var root = el("div", { className: "popup", "data-id": id }, [
      el("div", { className: "popup-title" }, [
        el("span", { className: "swatch cls-" + token(p["class"]) }),
        el("span", { text: classLabel(p["class"]) }),
        el("span", { className: "cid", title: id, text: shortId(id) })
      ]),
      el("div", { className: "popup-images" }, [
        imageFigure(p.crop_url, "popup.crop", "popup-crop", false),
        imageFigure(p.image_url, "popup.image", "popup-image", true)
      ]),
      el("table", { className: "popup-info" })
    ]);
    if (state.user) {
      var select = el("select", { className: "popup-status", "aria-label": t("popup.status") },
        state.config.statuses.map(function (s) {
          return el("option", { value: s, text: statusLabel(s) });
        }));
      var note = el("textarea", { className: "popup-note", rows: "2", placeholder: t("popup.note.placeholder"),
        "aria-label": t("popup.note") });
      var save = el("button", { type: "button", className: "popup-save", text: t("popup.save") });
      var original = el("select", { className: "popup-duplicate-of", "aria-label": t("popup.duplicate_pick"),
        hidden: true });
      select.addEventListener("change", function () { fillOriginals(id, original, select.value === "duplicate"); });
      save.addEventListener("click", function () { saveStatus(id, root, select, original, note, save); });
      root.appendChild(el("div", { className: "popup-edit" }, [select, save, original, note]));
    } else {
      root.appendChild(el("div", { className: "popup-hint", text: t("popup.login_to_edit") }));
    }
    root.appendChild(el("div", { className: "popup-sightings-title popup-hint", text: t("popup.sightings_list"),
      hidden: true }));
    root.appendChild(el("ul", { className: "popup-sightings" }));
    root.appendChild(el("div", { className: "popup-history-title popup-hint", text: t("popup.history"), hidden: true }));
    root.appendChild(el("ul", { className: "popup-history" }));
    fillPopupInfo(root, p);
    return root;
  }

  function onPopupOpen(id, popup) {
    if (!state.features[id]) return;
    var root = buildPopup(id);
    state.popupEls[id] = root;
    popup.setContent(root);
    // The popup was laid out before its pictures arrived.
    $all("img", root).forEach(function (img) {
      img.addEventListener("load", function () { if (popup.isOpen()) popup.update(); });
    });
    markSelected(id);
    api("GET", "api/complaints/" + encodeURIComponent(id)).then(function (detail) {
      if (state.popupEls[id] !== root) return;
      applyDetail(id, detail);
      fillSightings(root, id, detail.sightings_list);
      fillHistory(root, detail.history);
      if (popup.isOpen()) popup.update();
    }, function (err) {
      if (state.popupEls[id] === root) showError(err);
    });
  }

  function onPopupClose(id) {
    delete state.popupEls[id];
    if (state.selected === id) markSelected(null);
  }

  /* A complaint's detail (from its page or a saved status) over what was loaded. */
  function applyDetail(id, detail) {
    var f = state.features[id];
    if (!f || !detail) return;
    var props = {};
    Object.keys(f.properties).forEach(function (k) {
      props[k] = detail[k] !== undefined ? detail[k] : f.properties[k];
    });
    if (sameProps(props, f.properties)) return;
    f.properties = props;
    var m = state.markers[id];
    if (m) { m.setIcon(markerIcon(props, id)); tagMarker(m, id); }
    if (state.popupEls[id]) fillPopupInfo(state.popupEls[id], props);
    renderList();
  }

  /* Metres between two [lat, lon] (equirectangular: enough within a city). */
  function metres(a, b) {
    var k = Math.PI / 180, x = (b[1] - a[1]) * k * Math.cos((a[0] + b[0]) / 2 * k), y = (b[0] - a[0]) * k;
    return 6371000 * Math.sqrt(x * x + y * y);
  }

  /* "duplicate" needs the original: the loaded complaints of the same class that are not
   * duplicates themselves, nearest first. */
  function fillOriginals(id, select, show) {
    select.hidden = !show;
    if (!show) return;
    var f = state.features[id];
    var here = [f.geometry.coordinates[1], f.geometry.coordinates[0]];
    var options = state.order.filter(function (other) {
      var p = state.features[other].properties;
      return other !== id && p["class"] === f.properties["class"] && p.status !== "duplicate";
    }).map(function (other) {
      var c = state.features[other].geometry.coordinates;
      return { id: other, m: metres(here, [c[1], c[0]]), p: state.features[other].properties };
    }).sort(function (a, b) { return a.m - b.m; }).slice(0, 20);
    select.textContent = "";
    if (!options.length) {
      select.appendChild(el("option", { value: "", text: t("popup.duplicate_none") }));
      return;
    }
    options.forEach(function (o) {
      select.appendChild(el("option", { value: o.id, text: shortId(o.id) + " · " + Math.round(o.m) + " m · " +
        statusLabel(o.p.status) + " · " + fmtTime(o.p.first_seen) }));
    });
  }

  /* Each sighting: when, which vehicle, score; logged in, a tick box for each and a button
   * that splits the ticked ones out into a new complaint (a wrong merge). */
  function fillSightings(root, id, sightings) {
    var list = $(".popup-sightings", root);
    list.textContent = "";
    (sightings || []).forEach(function (s) {
      var text = fmtTime(s.captured_at) + " · " + s.device + " · " + fmtNumber(s.score, 2);
      var children = [];
      if (state.user && sightings.length > 1) {
        children.push(el("input", { type: "checkbox", className: "popup-sighting-pick", value: s.event_id }));
      }
      children.push(s.image_url ? el("a", { href: s.image_url, target: "_blank", rel: "noopener", text: text })
        : el("span", { text: text }));
      list.appendChild(el("li", { className: "popup-sighting", "data-event": s.event_id }, [
        el("label", {}, children)]));
    });
    $(".popup-sightings-title", root).hidden = list.children.length === 0;
    var old = $(".popup-split", root);
    if (old) old.remove();
    if (state.user && sightings && sightings.length > 1) {
      var button = el("button", { type: "button", className: "popup-split", text: t("popup.split"),
        title: t("popup.split_hint") });
      button.addEventListener("click", function () { splitOut(id, root, button); });
      list.parentNode.insertBefore(button, list.nextSibling);
    }
  }

  function splitOut(id, root, button) {
    var picked = $all(".popup-sighting-pick", root).filter(function (i) { return i.checked; })
      .map(function (i) { return i.value; });
    if (!picked.length) { showMessage(t("popup.split_hint"), "info"); return; }
    button.disabled = true;
    api("POST", "api/complaints/" + encodeURIComponent(id) + "/split", { sightings: picked }).then(function () {
      showMessage(t("popup.split_done"), "info");
      map.closePopup();
      loadComplaints();
    }, function (err) {
      showError(err);
      if (err.status === 401) setUser(null);
    }).then(function () { button.disabled = false; });
  }

  function saveStatus(id, root, select, original, note, button) {
    var body = { status: select.value, note: note.value };
    if (select.value === "duplicate") body.duplicate_of = original.value || null;
    button.disabled = true;
    api("POST", "api/complaints/" + encodeURIComponent(id) + "/status", body).then(function (detail) {
      note.value = "";
      applyDetail(id, detail);
      if (detail && detail.history) fillHistory(root, detail.history);
      showMessage(t("popup.saved"), "info");
      // A merge changes the original too (its sightings, its vehicles).
      loadComplaints();
    }, function (err) {
      showError(err);
      if (err.status === 401) setUser(null);
    }).then(function () { button.disabled = false; });
  }

  /* The open popup again, e.g. after logging in or out or a change of language. */
  function rebuildOpenPopup() {
    var id = state.selected;
    var m = id !== null ? state.markers[id] : null;
    if (m && m.isPopupOpen()) onPopupOpen(id, m.getPopup());
  }

  // ---- heat map -----------------------------------------------------------------

  function loadHeat(params) {
    var seq = ++state.heatSeq;
    if (!$("#heat-toggle").checked) {
      if (heatLayer) { map.removeLayer(heatLayer); heatLayer = null; }
      return;
    }
    var shown = function (points) {
      if (seq !== state.heatSeq || !$("#heat-toggle").checked) return;
      var max = 1;
      points.forEach(function (p) { if (typeof p[2] === "number" && p[2] > max) max = p[2]; });
      if (!heatLayer) {
        heatLayer = L.heatLayer(points, { radius: 30, blur: 22, max: max, minOpacity: 0.35 }).addTo(map);
      } else {
        heatLayer.setOptions({ max: max });
        heatLayer.setLatLngs(points);
      }
    };
    if (params === null) { shown([]); return; }
    api("GET", "api/heat" + qs(params)).then(function (points) { shown(points || []); }, showError);
  }

  // ---- fleet --------------------------------------------------------------------

  function loadFleet() {
    return api("GET", "api/fleet").then(function (units) {
      reachable();
      state.fleet = units || [];
      renderFleet();
      renderUnitMarkers();
      fillVehicles();
    }, function (err) { showError(err); });
  }

  function modelName(m) {
    if (m === null || m === undefined || m === "") return t("none");
    if (typeof m !== "object") return String(m);
    return String(m.name || m.version || m.file || (m.sha256 && m.sha256.slice(0, 12)) || JSON.stringify(m));
  }

  function renderFleet() {
    var list = $("#fleet");
    list.textContent = "";
    if (!state.fleet.length) {
      list.appendChild(el("li", { className: "list-note", text: t("fleet.empty") }));
      return;
    }
    state.fleet.slice().sort(function (a, b) { return a.device < b.device ? -1 : a.device > b.device ? 1 : 0; })
      .forEach(function (u) {
        var tel = u.telemetry || {};
        var det = tel.detector || {}, out = tel.outbox || {}, gps = tel.gps || {};
        var broker = tel.broker || {}, machine = tel.machine || {};
        var rows = [
          ["fleet.last_seen", ago(u.last_seen)],
          ["fleet.position", u.position
            ? u.position.lat.toFixed(5) + ", " + u.position.lon.toFixed(5) + " (" + ago(u.position.at) + ")"
            : t("fleet.no_position")]
        ];
        if (u.telemetry) {
          rows.push(["fleet.fps", typeof det.frames_per_s === "number"
            ? t("fleet.fps.unit", { v: fmtNumber(det.frames_per_s, 1) }) : t("none")]);
          rows.push(["fleet.pending", typeof out.pending === "number" ? String(out.pending) : t("none"),
            out.pending > 0 ? "flag-bad" : null]);
          rows.push(["fleet.gps_fix", fmtYesNo(gps.fix), gps.fix === false ? "flag-bad" : null]);
          rows.push(["fleet.broker", fmtYesNo(broker.connected), broker.connected === false ? "flag-bad" : null]);
          rows.push(["fleet.disk", fmtDisk(machine.disk_free_mb),
            typeof machine.disk_free_mb === "number" && machine.disk_free_mb < 1024 ? "flag-bad" : null]);
        } else {
          rows.push(["fleet.telemetry", t("fleet.no_telemetry")]);
        }
        rows.push(["fleet.config_version", u.config_version !== null && u.config_version !== undefined
          ? String(u.config_version) : t("none")]);
        rows.push(["fleet.agent_version", u.agent_version || t("none")]);
        rows.push(["fleet.model", modelName(u.model)]);
        var dl = el("dl");
        rows.forEach(function (r) {
          dl.appendChild(el("dt", { text: t(r[0]) }));
          dl.appendChild(el("dd", { className: r[2] || null, text: r[1] }));
        });
        var li = el("li", {
          className: "unit " + (u.online ? "online" : "offline"), "data-device": u.device,
          "data-online": u.online ? "true" : "false", tabindex: "0"
        }, [
          el("div", { className: "unit-head" }, [
            el("span", { className: "unit-name", text: u.device }),
            el("span", { className: "online-badge", text: t(u.online ? "fleet.online" : "fleet.offline") })
          ]),
          dl
        ]);
        list.appendChild(li);
      });
  }

  function renderUnitMarkers() {
    unitLayer.clearLayers();
    state.fleet.forEach(function (u) {
      if (!u.position || typeof u.position.lat !== "number") return;
      var m = L.marker([u.position.lat, u.position.lon], {
        icon: L.divIcon({ className: "unit-marker " + (u.online ? "online" : "offline"), iconSize: [16, 16] }),
        // Beneath the complaints: a van parked on a finding must not hide it.
        zIndexOffset: -1000, keyboard: false
      });
      m.bindTooltip(u.device + " · " + t(u.online ? "fleet.online" : "fleet.offline"), { direction: "top", offset: [0, -8] });
      m.on("add", function () { var e = m.getElement(); if (e) e.setAttribute("data-device", u.device); });
      m.device = u.device;
      unitLayer.addLayer(m);
    });
  }

  function focusUnit(device) {
    unitLayer.eachLayer(function (m) {
      if (m.device === device) {
        map.panTo(m.getLatLng());
        m.openTooltip();
      }
    });
  }

  function fillVehicles() {
    var select = $("#filter-vehicle");
    var current = select.value;
    var devices = state.fleet.map(function (u) { return u.device; }).sort();
    if (current && devices.indexOf(current) < 0) devices.push(current);
    $all("option", select).forEach(function (o) { if (o.value) o.remove(); });
    devices.forEach(function (d) { select.appendChild(el("option", { value: d, text: d })); });
    select.value = current;
  }

  // ---- login --------------------------------------------------------------------

  function setUser(user) {
    state.user = user || null;
    $("#login-form").hidden = !!state.user;
    $("#whoami").hidden = !state.user;
    $("#logout").hidden = !state.user;
    $("#whoami").textContent = state.user ? t("login.whoami", { user: state.user }) : "";
    rebuildOpenPopup();
  }

  function login(e) {
    e.preventDefault();
    var user = $("#login-user").value.trim();
    var password = $("#login-password").value;
    $("#login-submit").disabled = true;
    api("POST", "api/login", { user: user, password: password }).then(function (r) {
      $("#login-password").value = "";
      hideMessage();
      setUser((r && r.user) || user);
    }, function (err) {
      showError(err, t("login.failed"));
      $("#login-password").select();
    }).then(function () { $("#login-submit").disabled = false; });
  }

  function logout() {
    api("POST", "api/logout").then(function () { setUser(null); }, showError);
  }

  // ---- map ----------------------------------------------------------------------

  function setTiles(s) {
    state.tiles = s;
    var note = s === "none" ? "tiles.none" : s === "unreachable" ? "tiles.unreachable" : null;
    $("#map").classList.toggle("no-tiles", s !== "ok");
    var div = tilesNote.getContainer();
    if (div) {
      div.hidden = !note;
      div.setAttribute("data-i18n", note || "");
      div.textContent = note ? t(note) : "";
    }
  }

  function buildMap() {
    var cfg = state.config;
    var maxZoom = (cfg.tiles && cfg.tiles.max_zoom) || 19;
    // The cluster group needs the map's own maxZoom when no tile layer gives one.
    map = L.map("map", { center: cfg.center, zoom: cfg.zoom || 14, maxZoom: maxZoom });
    L.control.scale({ imperial: false }).addTo(map);

    tilesNote = L.control({ position: "bottomleft" });
    tilesNote.onAdd = function () { return el("div", { id: "tiles-note", className: "tiles-note" }); };
    tilesNote.addTo(map);

    if (cfg.tiles && cfg.tiles.url) {
      var loadedAny = false;
      var layer = L.tileLayer(cfg.tiles.url, {
        attribution: cfg.tiles.attribution || "", maxZoom: maxZoom
      });
      // One tile that fails among many that load is not "unreachable".
      layer.on("tileload", function () { loadedAny = true; if (state.tiles !== "ok") setTiles("ok"); });
      layer.on("tileerror", function () { if (!loadedAny) setTiles("unreachable"); });
      layer.addTo(map);
      setTiles("ok");
    } else {
      setTiles("none");
    }

    cluster = L.markerClusterGroup({ showCoverageOnHover: false, maxClusterRadius: 40, chunkedLoading: true });
    map.addLayer(cluster);
    unitLayer = L.layerGroup().addTo(map);

    legend = L.control({ position: "bottomright" });
    legend.onAdd = function () { return el("div", { className: "legend" }); };
    legend.addTo(map);
    renderLegend();

    // The panels beside the map change size (a narrow window, the list growing).
    if (window.ResizeObserver) new ResizeObserver(function () { map.invalidateSize(); }).observe($("#map"));

    var moveTimer = null;
    map.on("moveend", function () {
      if (!$("#filter-area").checked) return;
      clearTimeout(moveTimer);
      moveTimer = setTimeout(loadComplaints, 300);
    });
  }

  function renderLegend() {
    var div = legend.getContainer();
    div.textContent = "";
    div.appendChild(el("h3", { text: t("legend") }));
    state.config.classes.forEach(function (c) {
      div.appendChild(el("div", null, [el("span", { className: "swatch cls-" + token(c) }), classLabel(c)]));
    });
    div.appendChild(el("div", null, [el("span", { className: "unit-marker" }), t("legend.unit")]));
  }

  // ---- language -----------------------------------------------------------------

  function switchLang() {
    I18N.setLang(I18N.lang() === "ko" ? "en" : "ko");
    // A passing note was in the other language; an error (often the server's words) stays.
    if ($("#message").className !== "error") hideMessage();
    if (!state.config) return;
    setTiles(state.tiles);
    renderLegend();
    renderList();
    renderFleet();
    renderUnitMarkers();
    setUser(state.user);   // the greeting, and the open popup again
  }

  // ---- start --------------------------------------------------------------------

  function wire() {
    $("#lang").addEventListener("click", switchLang);
    $("#message-close").addEventListener("click", hideMessage);
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    $("#filters").addEventListener("change", function (e) {
      if (e.target.id === "heat-toggle") loadHeat(filterParams());
      else loadComplaints();
    });
    $("#filter-reset").addEventListener("click", resetFilters);
    $("#list").addEventListener("click", function (e) {
      var li = e.target.closest(".complaint-item");
      if (li) focusComplaint(li.getAttribute("data-id"));
    });
    $("#list").addEventListener("keydown", function (e) {
      var li = e.target.closest(".complaint-item");
      if (li && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); focusComplaint(li.getAttribute("data-id")); }
    });
    $("#fleet").addEventListener("click", function (e) {
      var li = e.target.closest(".unit");
      if (li) focusUnit(li.getAttribute("data-device"));
    });
  }

  function start() {
    I18N.apply(document);
    wire();
    api("GET", "api/config").then(function (cfg) {
      reachable();
      cfg.classes = cfg.classes || [];
      cfg.statuses = cfg.statuses || [];
      cfg.center = cfg.center || [37.6584, 126.8320];
      state.config = cfg;
      buildFilters();
      buildMap();
      setUser(cfg.user);
      $("#list").appendChild(el("li", { className: "list-note", text: t("list.loading") }));
      loadComplaints();
      loadFleet();
      setInterval(function () { if (!document.hidden) loadComplaints(); }, COMPLAINTS_EVERY_MS);
      setInterval(function () { if (!document.hidden) loadFleet(); }, FLEET_EVERY_MS);
    }, function (err) {
      showError(err);
      setTimeout(start2, 5000);
    }).catch(function (e) {
      // A fault of this page, not the server's: in the console with its stack.
      console.error(e && e.stack ? e.stack : e);
      showError(e);
    });
  }

  /* The config could not be had: try again (wire() is done once). */
  function start2() {
    api("GET", "api/config").then(function () { window.location.reload(); }, function () {
      setTimeout(start2, 5000);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
