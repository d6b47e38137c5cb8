/* Length limits shown before a user submits (issue: nothing typed is dropped without a word).
 *
 * Every field with `data-limit="N"` gets a live counter ("1,234 / 5,000 characters") right
 * after it. Over the limit the counter says by how much, the field is marked invalid, and
 * submitting its form is stopped with the focus on the field: the text stays where it is.
 * No `maxlength` attribute is used, because a browser silently cuts pasted text at it.
 * The server refuses longer text too (annotations/limits.py), so this is a courtesy, not the
 * rule. Loaded by base.html on every page.
 */
(function () {
  "use strict";
  const fmt = (n) => n.toLocaleString("en-US");

  function attach(field) {
    if (field.dataset.limitAttached) return;
    field.dataset.limitAttached = "1";
    const limit = Number(field.dataset.limit);
    const counter = document.createElement("p");
    counter.className = "char-counter";
    counter.id = (field.id || `f${Math.random().toString(36).slice(2)}`) + "-counter";
    counter.setAttribute("aria-live", "polite");
    field.insertAdjacentElement("afterend", counter);
    const described = (field.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    field.setAttribute("aria-describedby", [...described, counter.id].join(" "));
    const update = () => {
      const n = field.value.length;
      const over = n - limit;
      counter.textContent =
        over > 0
          ? `${fmt(n)} / ${fmt(limit)} characters: ${fmt(over)} too many. Shorten it to submit.`
          : `${fmt(n)} / ${fmt(limit)} characters`;
      counter.classList.toggle("over", over > 0);
      if (over > 0) field.setAttribute("aria-invalid", "true");
      else if (field.dataset.limitInvalid) field.removeAttribute("aria-invalid");
      field.dataset.limitInvalid = over > 0 ? "1" : "";
    };
    field.addEventListener("input", update);
    update();
  }

  function overLimit(form) {
    return [...form.querySelectorAll("[data-limit]")].find(
      (f) => f.value.length > Number(f.dataset.limit)
    );
  }

  function init(root) {
    root.querySelectorAll("[data-limit]").forEach(attach);
  }

  document.addEventListener(
    "submit",
    (evt) => {
      const bad = overLimit(evt.target);
      if (!bad) return;
      evt.preventDefault();
      evt.stopImmediatePropagation();
      bad.scrollIntoView({ block: "center" });
      bad.focus();
    },
    true
  );
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => init(document));
  } else {
    init(document);
  }
  window.textLimits = { init, overLimit };
})();
