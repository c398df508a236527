// pilotfish web UI: live lists, the ACL token, KV writes. Pages are
// rendered (and escaped) by the server; this script never builds markup
// from data: it swaps in server-rendered nodes and sets textContent.
"use strict";
(function () {
  var TOKEN = "pilotfish-ui-token";
  var WAIT = "5m";

  function token() {
    try { return sessionStorage.getItem(TOKEN) || ""; } catch (e) { return ""; }
  }
  function headers() {
    var t = token();
    return t ? { "X-Consul-Token": t } : {};
  }
  function $(sel, root) { return (root || document).querySelector(sel); }
  function say(el, text, bad) {
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", !!bad);
  }
  function offline(on, text) {
    var b = $("#offline");
    if (!b) return;
    b.hidden = !on;
    if (on) b.textContent = text || "Agent unreachable: retrying…";
  }

  // This page as the server renders it now (with the token).
  function fetchPage() {
    return fetch(location.href, { headers: headers(), cache: "no-store" }).then(function (r) {
      return r.text().then(function (html) {
        return { status: r.status, doc: new DOMParser().parseFromString(html, "text/html") };
      });
    });
  }

  // Replace this page's <main> and title with another rendering's.
  function adopt(doc) {
    var main = $("main", doc);
    if (!main) return;
    document.title = doc.title;
    $("main").replaceWith(document.importNode(main, true));
    start();
  }

  // ----- live lists: one blocking query per list -----
  var generation = 0;
  function watch(el, gen) {
    var url = el.dataset.watch;
    var index = Number(el.dataset.index) || 0;
    var delay = 1000;
    function again(ms) { setTimeout(loop, ms); }
    function loop() {
      if (gen !== generation || !document.body.contains(el)) return;
      var sep = url.indexOf("?") < 0 ? "?" : "&";
      fetch(url + sep + "index=" + index + "&wait=" + WAIT, { headers: headers(), cache: "no-store" })
        .then(function (r) {
          if (r.status !== 200 && r.status !== 404) throw new Error("the agent answered " + r.status);
          offline(false);
          delay = 1000;
          var next = Number(r.headers.get("X-Consul-Index")) || 0;
          if (next < index) next = 0; // Consul's rule: an index going backwards resets
          if (next === index) return again(0);
          return fetchPage().then(function (p) {
            var fresh = p.doc.getElementById(el.id);
            // Not rendered (no leader during an election, say): keep the
            // old index, so the next query answers at once, and back off.
            if (p.status !== 200 || !fresh) throw new Error("the agent answered " + p.status);
            index = next;
            var node = document.importNode(fresh, true);
            el.replaceWith(node);
            el = node;
            filter();
            again(0);
          });
        })
        .catch(function (e) {
          offline(true, (e && e.message && e.message.indexOf("answered") >= 0)
            ? "Agent error (" + e.message + "): retrying…" : "Agent unreachable: retrying…");
          again(delay);
          delay = Math.min(delay * 2, 30000);
        });
    }
    loop();
  }

  // The jobs page (telemetry port) has no blocking query: re-read slowly.
  function refresh(el, gen) {
    var seconds = Number(el.dataset.refresh) || 5;
    setTimeout(function tick() {
      if (gen !== generation) return;
      fetchPage().then(function (p) {
        offline(false);
        var fresh = p.doc.getElementById(el.id);
        if (fresh) { var n = document.importNode(fresh, true); el.replaceWith(n); el = n; }
        setTimeout(tick, seconds * 1000);
      }, function () {
        offline(true);
        setTimeout(tick, seconds * 1000);
      });
    }, seconds * 1000);
  }

  // ----- the filter box: hide rows as you type -----
  function filter() {
    var box = $("#filter");
    if (!box) return;
    var q = box.value.trim().toLowerCase();
    var rows = document.querySelectorAll("tr[data-search]");
    var shown = 0;
    rows.forEach(function (tr) {
      var hit = !q || tr.dataset.search.indexOf(q) >= 0;
      tr.hidden = !hit;
      if (hit) shown++;
    });
    var count = $(".shown");
    if (count) count.textContent = String(shown);
  }

  // ----- the token prompt -----
  function prompt() {
    var form = $("#token-form");
    if (!form) return false;
    var err = $("#token-error");
    function tryToken(first) {
      return fetchPage().then(function (p) {
        if ($("#token-form", p.doc)) {
          form.hidden = false;
          if (!first) say(err, "That token was refused.", true);
          $("#token").focus();
          return;
        }
        adopt(p.doc);
      }, function () { offline(true); });
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      try { sessionStorage.setItem(TOKEN, $("#token").value); } catch (e) { /* private mode */ }
      tryToken(false);
    });
    if (token()) tryToken(true); else { form.hidden = false; $("#token").focus(); }
    return true;
  }

  // ----- KV writes through the API, with check-and-set -----
  function kvUrl(key, query) {
    return "/v1/kv/" + key.split("/").map(encodeURIComponent).join("/") + query;
  }
  function write(method, url, body) {
    var h = headers();
    h["Content-Type"] = "application/octet-stream";
    return fetch(url, { method: method, headers: h, body: body }).then(function (r) {
      return r.text().then(function (t) {
        if (r.status !== 200) throw new Error("The agent answered " + r.status + ": " + t);
        return t.trim() === "true";
      });
    });
  }
  var CHANGED = "Not saved: someone else changed this key since you opened it. Reload to see the current value, then edit again.";
  function kv() {
    var edit = $("#kv-edit");
    if (edit) {
      edit.hidden = false;
      var out = $(".result", edit);
      edit.addEventListener("submit", function (ev) {
        ev.preventDefault();
        write("PUT", kvUrl(edit.dataset.key, "?cas=" + edit.dataset.cas), $("#kv-value").value)
          .then(function (ok) {
            if (!ok) return say(out, CHANGED, true);
            say(out, "Saved.");
            return fetch(kvUrl(edit.dataset.key, ""), { headers: headers(), cache: "no-store" })
              .then(function (r) { return r.json(); })
              .then(function (e) {
                edit.dataset.cas = String(e[0].ModifyIndex);
                var mi = $(".modify-index");
                if (mi) mi.textContent = String(e[0].ModifyIndex);
              });
          })
          .catch(function (e) { say(out, e.message, true); });
      });
      $("#kv-delete").addEventListener("click", function () {
        if (!confirm("Delete the key " + edit.dataset.key + "?")) return;
        write("DELETE", kvUrl(edit.dataset.key, "?cas=" + edit.dataset.cas), null)
          .then(function (ok) {
            if (!ok) return say(out, CHANGED.replace("Not saved", "Not deleted"), true);
            location.assign(edit.dataset.parent);
          })
          .catch(function (e) { say(out, e.message, true); });
      });
    }
    var add = $("#kv-new");
    if (add) {
      add.hidden = false;
      var res = $(".result", add);
      add.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var key = add.dataset.prefix + $("#new-key").value;
        write("PUT", kvUrl(key, "?cas=0"), $("#new-value").value)
          .then(function (ok) {
            if (!ok) return say(res, "Not created: the key " + key + " already exists.", true);
            location.assign("/ui/kv/" + key.split("/").map(encodeURIComponent).join("/"));
          })
          .catch(function (e) { say(res, e.message, true); });
      });
    }
  }

  function start() {
    generation++;
    var forget = $("#forget-token");
    if (forget && token()) forget.hidden = false;
    if (prompt()) return;
    document.querySelectorAll("[data-watch]").forEach(function (el) { watch(el, generation); });
    document.querySelectorAll("[data-refresh]").forEach(function (el) { refresh(el, generation); });
    var box = $("#filter");
    if (box && !box.dataset.bound) {
      box.dataset.bound = "1";
      box.addEventListener("input", filter);
    }
    filter();
    kv();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var forget = $("#forget-token");
    if (forget) forget.addEventListener("click", function () {
      try { sessionStorage.removeItem(TOKEN); } catch (e) { /* nothing kept */ }
      location.reload();
    });
    start();
  });
})();
