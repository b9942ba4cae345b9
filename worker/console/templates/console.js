// The overview refreshes itself: its fragment fetched every few seconds, no page reload.
(function () {
  var box = document.getElementById("overview");
  if (!box) { return; }
  var every = parseInt(box.dataset.refreshMs, 10) || 5000;
  setInterval(function () {
    fetch(box.dataset.refreshUrl, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { box.innerHTML = html; } })
      .catch(function () {});
  }, every);
})();
