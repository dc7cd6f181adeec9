// Duplicate groups side by side: the kept face first and marked, each other member with its
// embedding similarity, perceptual-hash distance and pose / expression / light differences.

import { thumbnailUrl } from "./api.js";

const PAGE = 100;

function caption(member) {
  if (member.keep) return "keeper";
  const parts = [];
  if (member.similarity !== null) parts.push(`cos ${member.similarity}`);
  if (member.phash_bits !== null) parts.push(`${member.phash_bits} bits`);
  if (member.pose_delta !== null) parts.push(`Δpose ${member.pose_delta}°`);
  if (member.expression_delta !== null) parts.push(`Δexpr ${member.expression_delta}`);
  if (member.light_delta !== null) parts.push(`Δlight ${member.light_delta}`);
  return parts.join(" · ") || member.kind;
}

export class DuplicateView {
  constructor(element, { onClick }) {
    this.element = element;
    this.onClick = onClick;
    this.shown = PAGE;
  }

  show(groups, data, visible, state) {
    this.data = data;
    this.state = state;
    const byId = state.byId;
    // a group is listed when any of its members passes the filters
    const listed = groups.filter((g) => g.members.some((m) => visible.has(byId.get(m.id))));
    this.element.replaceChildren();
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent = `${listed.length} duplicate groups (${groups.length} in the faceset); the kept face has a green frame. ` +
      "Make another face the keeper with k (then re-run curate analyze).";
    this.element.append(note);
    for (const group of listed.slice(0, this.shown)) {
      const box = document.createElement("div");
      box.className = "group";
      const title = document.createElement("h4");
      title.textContent = `group ${group.group} · ${group.members.length} faces · ${group.members[0].kind}`;
      const members = document.createElement("div");
      members.className = "members";
      for (const member of group.members) {
        const index = byId.get(member.id);
        const tile = document.createElement("div");
        tile.className = "member" + (member.keep ? " keep" : "");
        tile.dataset.id = member.id;
        tile.dataset.index = index;
        tile.title = `${member.path} #${member.index}\n${member.reason}`;
        const img = document.createElement("img");
        img.src = thumbnailUrl(member.id);
        img.alt = "";
        const text = document.createElement("div");
        text.className = "cap";
        text.textContent = `${member.path.split("/").pop()} #${member.index} · ${caption(member)}`;
        tile.append(img, text);
        if (member.keep) {
          const mark = document.createElement("span");
          mark.className = "keeper-mark";
          mark.textContent = "keeper";
          tile.append(mark);
        }
        tile.addEventListener("click", (event) => this.onClick(index, event));
        members.append(tile);
      }
      box.append(title, members);
      this.element.append(box);
    }
    if (listed.length > this.shown) {
      const more = document.createElement("button");
      more.textContent = `show ${Math.min(PAGE, listed.length - this.shown)} more groups`;
      more.addEventListener("click", () => { this.shown += PAGE; this.show(groups, data, visible, state); });
      this.element.append(more);
    }
    this.refresh();
  }

  refresh() {
    for (const tile of this.element.querySelectorAll(".member")) {
      const index = Number(tile.dataset.index);
      tile.classList.toggle("focused", index === this.state.focus);
      tile.classList.toggle("selected", this.state.selection.has(index));
    }
  }
}
