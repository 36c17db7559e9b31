// Entry point: session (API key in sessionStorage), role, and a hash router over the pages.

import { ApiError, setUnauthorizedHandler, storedKey, storeKey, whoAmI } from "./api.js";
import { h, mount, toast } from "./dom.js";

const ROLE_STORAGE = "vigil.role";

/** What the signed-in key may do; the server enforces the same rules, this only hides controls. */
export const session = {
  role: null,
  name: "",
  keyId: "",
  get isAdmin() {
    return this.role === "admin";
  },
  get canLabel() {
    return this.role === "admin" || this.role === "ingest";
  },
};

const routes = [
  { pattern: /^\/streams$/, load: () => import("./streams.js"), page: "streams" },
  { pattern: /^\/streams\/([^/]+)$/, load: () => import("./timeline.js"), page: "streams" },
  { pattern: /^\/events\/([^/]+)$/, load: () => import("./event.js"), page: "streams" },
  { pattern: /^\/admin$/, load: () => import("./admin.js"), page: "admin", admin: true },
];

let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/streams";
  const [path, search = ""] = raw.split("?");
  return { path, params: new URLSearchParams(search) };
}

async function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
    cleanup = null;
  }
  const main = document.getElementById("main");
  if (!storedKey() || !session.role) {
    showSignIn(main);
    return;
  }
  const { path, params } = parseHash();
  const route = routes.find((r) => r.pattern.test(path));
  highlightNav(route?.page);
  if (!route || (route.admin && !session.isAdmin)) {
    document.title = "Not found · Vigil";
    mount(main, h("section", { class: "page" },
      h("h1", {}, "Page not available"),
      h("p", {}, route ? "This page needs an admin key." : "There is no such page."),
      h("p", {}, h("a", { href: "#/streams" }, "Back to the streams"))));
    return;
  }
  const args = path.match(route.pattern).slice(1).map(decodeURIComponent);
  const module = await route.load();
  mount(main);
  cleanup = (await module.render(main, { args, params, session })) || null;
}

function highlightNav(page) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showChrome(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("session").hidden = !signedIn;
  document.getElementById("nav-admin").hidden = !(signedIn && session.isAdmin);
  const badge = document.getElementById("role-badge");
  badge.textContent = signedIn ? `${session.name ? `${session.name} · ` : ""}${session.role}` : "";
  badge.dataset.role = session.role || "";
}

function showSignIn(main, message = "") {
  showChrome(false);
  document.title = "Sign in · Vigil";
  const error = h("p", { class: "form-error", id: "signin-error", role: "alert" }, message);
  const input = h("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", "aria-describedby": "api-key-help signin-error",
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Sign in");
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Vigil"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { class: "help", id: "api-key-help" },
      "Paste the key your administrator gave you. It is kept only for this browser tab and ",
      "forgotten when the tab closes."),
    error,
    submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      await signIn(input.value.trim());
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "This key was not accepted. Check it and try again."
        : `Could not sign in: ${err.message}`;
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  mount(main, h("section", { class: "page page-narrow" }, form));
  input.focus();
}

async function signIn(key) {
  const me = await whoAmI(key);
  storeKey(key);
  session.role = me.role;
  session.name = me.name;
  session.keyId = me.keyId;
  sessionStorage.setItem(ROLE_STORAGE, JSON.stringify(me));
  showChrome(true);
  if (!location.hash || location.hash === "#/" || location.hash.startsWith("#/signin")) {
    location.hash = "#/streams";
  } else {
    await render();
  }
}

function signOut(message = "") {
  storeKey(null);
  sessionStorage.removeItem(ROLE_STORAGE);
  session.role = null;
  session.name = "";
  session.keyId = "";
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  showSignIn(document.getElementById("main"), message);
}

async function start() {
  setUnauthorizedHandler(() => signOut("Your key is no longer accepted (revoked or expired)."));
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => render().catch(showFatal));
  const saved = sessionStorage.getItem(ROLE_STORAGE);
  if (storedKey() && saved) {
    Object.assign(session, JSON.parse(saved));
    showChrome(true);
  }
  await render();
}

function showFatal(err) {
  console.error(err);
  toast(`Something went wrong: ${err.message}`, "error");
}

start().catch(showFatal);
