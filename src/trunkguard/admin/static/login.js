// A one-time login link (/login#once=CODE): the code is in the fragment, which the
// browser never sends in a request line, so no server or proxy log holds it. It is
// posted once, then wiped from the address bar and the history.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const match = /^#once=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname);
  document.getElementById("once").value = match[1];
  document.getElementById("login").submit();
});
