// The sign-in page (api/access.py), its one script. After a refused token the page is the
// answer of POST api/session: the address bar goes back to the address the visitor came for,
// so that a reload asks again there rather than posting the form again.

const next = document.querySelector('input[name="next"]');
if (next && next.value.startsWith("/") && location.pathname.endsWith("/api/session")) {
  history.replaceState(null, "", next.value);
}
