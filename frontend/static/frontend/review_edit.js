/* Edit-review page (frontend/templates/frontend/review_edit.html): focus the error summary
   after a failed save, count the comment's characters against its limit, and let Enter on a
   choice (radio, select) or Ctrl+Enter in the comment send the form. */
(function () {
  "use strict";
  const alertBox = document.querySelector("[data-autofocus]");
  if (alertBox) alertBox.focus();

  const form = document.querySelector(".review-edit form");
  if (!form) return;
  form.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const t = event.target;
    if (t.tagName === "TEXTAREA" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    } else if (t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type === "checkbox")) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  for (const area of form.querySelectorAll("textarea[data-limit]")) {
    const limit = Number(area.dataset.limit);
    const counter = document.createElement("p");
    counter.className = "helptext";
    counter.id = area.id + "_count";
    counter.setAttribute("aria-live", "polite");
    area.after(counter);
    area.setAttribute("aria-describedby", ((area.getAttribute("aria-describedby") || "") + " " + counter.id).trim());
    const update = () => {
      const n = area.value.length;
      counter.textContent = n.toLocaleString("en") + " of " + limit.toLocaleString("en") + " characters" + (n > limit ? ": too long, it will be refused" : "");
      counter.classList.toggle("errorlist", n > limit);
    };
    area.addEventListener("input", update);
    update();
  }
})();
