// Entity marking in the ops console: select part of a customer message (inbox) or of an example (the add and edit
// forms) and pick one of the domain's entities. In the inbox the span is added to the row's "实体标注" field as
// start-end:entity (offsets in characters, as the server counts them); in an example the selection is wrapped as
// [text](entity). Without this script both fields are typed by hand and work the same.
(function () {
  "use strict";

  const list = document.getElementById("domain-entities");
  if (!list) {
    return;
  }
  const entities = Array.from(list.options).map((option) => option.value);
  const SPAN = /^\s*(\d+)\s*-\s*(\d+)\s*:\s*([a-z][a-z0-9_]*)\s*$/;

  // Python counts characters (code points); JavaScript strings count UTF-16 units.
  const chars = (text) => Array.from(text);

  let pending = null;
  const picker = buildPicker();

  function element(tag, properties) {
    return Object.assign(document.createElement(tag), properties || {});
  }

  function buildPicker() {
    const box = element("div", { className: "entity-picker", hidden: true });
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "标注实体");
    const label = element("span", { className: "entity-picker-text" });
    const select = element("select", { name: "entity-choice" });
    select.setAttribute("aria-label", "实体");
    for (const name of entities) {
      select.appendChild(element("option", { value: name, textContent: name }));
    }
    const mark = element("button", { type: "button", className: "entity-mark", textContent: "标注" });
    const cancel = element("button", { type: "button", className: "entity-cancel", textContent: "取消" });
    const note = element("span", { className: "entity-picker-note" });
    box.append(label, select, mark, cancel, note);
    mark.addEventListener("click", () => {
      if (pending) {
        pending(select.value);
      }
      close();
    });
    cancel.addEventListener("click", close);
    document.body.appendChild(box);
    return { box, label, select, note, mark };
  }

  // `focus`: move the focus to the entity list (a selection in a message); a selection inside a text field keeps
  // the focus, so Shift+arrows can go on extending it.
  function open(text, rect, apply, focus) {
    pending = apply;
    picker.label.textContent = "将“" + text + "”标为";
    picker.note.textContent = "";
    picker.select.hidden = picker.mark.hidden = false;
    place(rect);
    if (focus) {
      picker.select.focus();
    }
  }

  function warn(message, rect) {
    pending = null;
    picker.label.textContent = "";
    picker.note.textContent = message;
    picker.select.hidden = picker.mark.hidden = true;
    place(rect);
  }

  function place(rect) {
    picker.box.style.top = window.scrollY + rect.bottom + 4 + "px";
    picker.box.style.left = window.scrollX + rect.left + "px";
    picker.box.hidden = false;
  }

  function close() {
    pending = null;
    picker.box.hidden = true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      close();
    }
  });
  document.addEventListener("mousedown", (event) => {
    if (!picker.box.contains(event.target)) {
      close();
    }
  });

  // The inbox: each review row has the message cell and the spans field.

  function parseSpans(value, length) {
    const spans = [];
    for (const part of value.split(/[,，;；]/)) {
      const match = SPAN.exec(part);
      if (match) {
        const span = { start: Number(match[1]), end: Number(match[2]), entity: match[3] };
        if (span.start < span.end && span.end <= length) {
          spans.push(span);
        }
      }
    }
    return spans.sort((a, b) => a.start - b.start);
  }

  function highlight(cell, text, spans) {
    const letters = chars(text);
    const parts = [];
    let cursor = 0;
    for (const span of spans) {
      if (span.start < cursor) {
        continue; // overlapping: the server refuses it; show the text plain
      }
      parts.push(document.createTextNode(letters.slice(cursor, span.start).join("")));
      const mark = element("mark", { className: "entity", textContent: letters.slice(span.start, span.end).join("") });
      mark.title = span.entity;
      mark.dataset.entity = span.entity;
      parts.push(mark);
      cursor = span.end;
    }
    parts.push(document.createTextNode(letters.slice(cursor).join("")));
    cell.replaceChildren(...parts);
  }

  const rows = [];
  for (const row of document.querySelectorAll("tr[data-item]")) {
    const cell = row.querySelector("td.text");
    const field = row.querySelector("input[name=entities]");
    if (!cell || !field) {
      continue;
    }
    const text = cell.textContent;
    const show = () => highlight(cell, text, parseSpans(field.value, chars(text).length));
    field.addEventListener("input", show);
    rows.push({ cell, field, text, show });
  }

  function markSelection() {
    const selection = window.getSelection();
    if (!selection || selection.isCollapsed || selection.rangeCount === 0) {
      return;
    }
    const range = selection.getRangeAt(0);
    const row = rows.find((r) => r.cell.contains(range.startContainer) && r.cell.contains(range.endContainer));
    if (!row) {
      return;
    }
    const before = document.createRange();
    before.selectNodeContents(row.cell);
    before.setEnd(range.startContainer, range.startOffset);
    const chosen = chars(range.toString());
    let start = chars(before.toString()).length;
    let end = start + chosen.length;
    // Leading and trailing spaces are not part of an entity.
    while (start < end && /\s/.test(chosen[0])) {
      chosen.shift();
      start += 1;
    }
    while (end > start && /\s/.test(chosen[chosen.length - 1])) {
      chosen.pop();
      end -= 1;
    }
    if (end <= start) {
      return;
    }
    const spans = parseSpans(row.field.value, chars(row.text).length);
    const rect = range.getBoundingClientRect();
    if (spans.some((span) => span.start < end && start < span.end)) {
      warn("与已有的标注重叠：请先在“实体标注”中删掉那一段。", rect);
      return;
    }
    open(chosen.join(""), rect, (entity) => {
      spans.push({ start, end, entity });
      spans.sort((a, b) => a.start - b.start);
      row.field.value = spans.map((span) => span.start + "-" + span.end + ":" + span.entity).join(", ");
      row.show();
      selection.removeAllRanges();
    }, true);
  }

  if (rows.length) {
    // After the browser has updated the selection.
    document.addEventListener("mouseup", (event) => {
      if (!picker.box.contains(event.target)) {
        setTimeout(markSelection, 0);
      }
    });
    document.addEventListener("keyup", (event) => {
      if (event.shiftKey) {
        markSelection();
      }
    });
  }

  // Examples: select inside the text field and the selection becomes [text](entity).

  function insideAnnotation(value, start, end) {
    const before = value.slice(0, start);
    const chosen = value.slice(start, end);
    return /[[\]()]/.test(chosen) || before.lastIndexOf("[") > before.lastIndexOf(")");
  }

  for (const input of document.querySelectorAll("input[data-annotate]")) {
    const check = () => {
      const start = input.selectionStart;
      const end = input.selectionEnd;
      if (start === null || end === null || end <= start || !input.value.slice(start, end).trim()) {
        return;
      }
      const rect = input.getBoundingClientRect();
      if (insideAnnotation(input.value, start, end)) {
        warn("选中的文字已在一个标注中，或跨过了标注。", rect);
        return;
      }
      const chosen = input.value.slice(start, end);
      open(chosen, rect, (entity) => {
        input.value = input.value.slice(0, start) + "[" + chosen + "](" + entity + ")" + input.value.slice(end);
        input.focus();
      }, false);
    };
    input.addEventListener("mouseup", () => setTimeout(check, 0));
    input.addEventListener("select", check);
    input.addEventListener("keyup", (event) => {
      if (event.shiftKey) {
        check();
      }
    });
  }

  // Deleting asks first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
})();
