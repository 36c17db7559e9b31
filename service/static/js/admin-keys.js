// API keys (admin): list, create (the key is shown once), revoke.

import { all, json } from "./api.js";
import { fmtDateTime, h, mount, ms, toast } from "./dom.js";

/** `ownKeyId`: the signed-in key, which cannot be revoked from here (it would lock the tab out). */
export async function renderKeys(box, ownKeyId = "") {
  const list = h("div", {});
  const shown = h("div", { role: "status" });
  const name = h("input", { id: "key-name", required: true, maxlength: 100, autocomplete: "off" });
  const role = h("select", { id: "key-role" }, ["viewer", "ingest", "admin"].map((r) => h("option", { value: r }, r)));
  const form = h("form", { class: "row row-bottom", id: "key-form" },
    h("div", { class: "field" }, h("label", { for: "key-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "key-role" }, "Role"), role),
    h("button", { type: "submit", class: "btn" }, "Create key"));
  const refresh = async () => {
    try {
      const keys = await all("/v1/admin/keys", { limit: 100 });
      mount(list, keysTable(keys, refresh, ownKeyId));
    } catch (err) {
      mount(list, h("p", { role: "alert" }, `Could not load keys: ${err.message}`));
    }
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const created = await json("/v1/admin/keys", { method: "POST", body: { name: name.value.trim(), role: role.value } });
      mount(shown, h("div", { class: "notice" },
        h("p", {}, `Key for “${created.name}” (${created.role}). Copy it now: it is not shown again.`),
        h("code", { class: "secret", tabindex: "0" }, created.key)));
      name.value = "";
      await refresh();
    } catch (err) {
      toast(`Could not create the key: ${err.message}`, "error");
    }
  });
  mount(box, form, shown, list);
  await refresh();
}

function keysTable(keys, refresh, ownKeyId) {
  return h("div", { class: "table-wrap" }, h("table", { class: "data", id: "keys-table" },
    h("thead", {}, h("tr", {}, ["Name", "Role", "Key id", "Created", "State"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, keys.map((k) => h("tr", { dataset: { keyId: k.key_id } },
      h("th", { scope: "row" }, k.name), h("td", {}, k.role), h("td", { class: "mono small" }, k.key_id),
      h("td", {}, fmtDateTime(ms(k.created_at))),
      h("td", {}, k.revoked_at ? `revoked ${fmtDateTime(ms(k.revoked_at))}`
        : k.key_id === ownKeyId ? h("span", { class: "muted" }, "this key (signed in)") : revokeButton(k, refresh)))))));
}

function revokeButton(key, refresh) {
  const button = h("button", { type: "button", class: "btn btn-small btn-danger" }, "Revoke");
  button.addEventListener("click", async () => {
    if (!window.confirm(`Revoke the key “${key.name}”? Programs using it stop working at once.`)) return;
    try {
      await json(`/v1/admin/keys/${encodeURIComponent(key.key_id)}`, { method: "DELETE" });
      toast(`Key “${key.name}” revoked.`);
      await refresh();
    } catch (err) {
      toast(`Could not revoke: ${err.message}`, "error");
    }
  });
  return button;
}
