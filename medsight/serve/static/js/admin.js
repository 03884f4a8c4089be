// Admin pages: users (list, add, enable/disable) and instances flagged for burned-in text.
// The page only shows them to admins; the API refuses everyone else anyway.

import { api } from "./api.js";
import { $, el, shortId, when } from "./dom.js";

function userRow(user, report) {
  const toggle = el("button", {
    type: "button",
    class: user.active ? "danger" : "secondary",
    text: user.active ? "Disable" : "Enable",
  });
  toggle.setAttribute("aria-label", `${user.active ? "Disable" : "Enable"} ${user.name}`);
  toggle.addEventListener("click", () =>
    report(async () => {
      await api(`/api/admin/users/${encodeURIComponent(user.name)}`, { method: "PATCH", json: { active: !user.active } });
      await loadUsers(report);
    }),
  );
  return el("tr", {}, [
    el("td", { text: user.name }),
    el("td", { text: user.role }),
    el("td", {}, [el("span", { class: user.active ? "badge" : "badge off", text: user.active ? "active" : "disabled" })]),
    el("td", {}, [toggle]),
  ]);
}

async function loadUsers(report) {
  const users = await api("/api/admin/users");
  $("#users-table tbody").replaceChildren(...users.map((u) => userRow(u, report)));
}

function flaggedRow(instance, report) {
  const clear = el("button", { type: "button", class: "secondary", text: "Clear flag" });
  clear.setAttribute("aria-label", `Clear the flag of instance ${instance.sop_instance_uid}`);
  clear.addEventListener("click", () =>
    report(async () => {
      await api(`/api/admin/instances/${encodeURIComponent(instance.sop_instance_uid)}/clear-flag`, { method: "POST" });
      await loadFlagged(report);
    }),
  );
  return el("tr", {}, [
    el("td", { class: "uid", text: instance.sop_instance_uid }),
    el("td", { class: "uid", text: shortId(instance.study_instance_uid, 32), title: instance.study_instance_uid }),
    el("td", { text: instance.flags.join(", ") }),
    el("td", { text: when(instance.created_at) }),
    el("td", {}, [clear]),
  ]);
}

async function loadFlagged(report) {
  const flagged = await api("/api/admin/instances/flagged");
  $("#flagged-table tbody").replaceChildren(...flagged.map((i) => flaggedRow(i, report)));
  $("#flagged-table").hidden = flagged.length === 0;
  $("#flagged-empty").hidden = flagged.length !== 0;
}

export async function loadAdmin(report) {
  await Promise.all([loadUsers(report), loadFlagged(report)]);
}

export function wireAdmin(report) {
  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    report(async () => {
      const json = { name: $("#new-name").value.trim(), role: $("#new-role").value, password: $("#new-password").value };
      await api("/api/admin/users", { method: "POST", json });
      $("#user-form").reset();
      await loadUsers(report);
    });
  });
}
