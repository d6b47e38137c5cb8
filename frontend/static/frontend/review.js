/* The review page: one task at a time through the review REST API (see README, "Review
 * rounds"). Plain JS, no build step.
 *
 * Why it is shaped this way:
 * - The server enforces blind-first: until the expectation is submitted, the payload carries
 *   no prediction, so this page cannot leak it; the reveal is built only from the payload
 *   that the expectation submit returns.
 * - Nothing typed is lost: every change saves a draft (debounced PUT), submits carry an
 *   Idempotency-Key made once per submit and reused on every retry, and network errors or
 *   5xx answers are retried with backoff while the status line says so.
 * - Regions are kept in IMAGE pixel coordinates, whatever the zoom; the canvas transform
 *   is the only place where screen and image coordinates meet.
 * - Nothing typed is dropped without a word: text over its limit (cfg.limits, from
 *   annotations/limits.py) is counted as it is typed, kept in the field and the draft, and
 *   refused before the submit with a message next to the field; a 400 naming fields shows
 *   each message next to its field and moves the focus to the first of them.
 */
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("review-config").textContent);
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const viewport = $("viewport");
  const expectationForm = $("expectation-form");
  const verdictForm = $("verdict-form");
  const EXPECTATION_QUESTIONS = ["expected_label", "expected_confidence", "evidence", "concepts"];
  const DRAFT_DELAY_MS = 800;
  const BACKOFF_S = [1, 2, 4, 8, 15, 30];
  const FIELD_NAMES = {
    expected_label: "Your label",
    expected_confidence: "Your confidence",
    evidence: "Regions",
    concepts: "Concept tags",
    free_tags: "Free tags",
    prediction_verdict: "Verdict on the prediction",
    feature_verdict: "Verdict on the features",
    acceptable: "Acceptable",
    severity: "Severity",
    reason: "Reason",
    comment: "Comment",
    lease: "Lease",
    phase: "Order",
    round: "Round",
    draft: "Draft",
    detail: "",
  };
  const LIMITS = cfg.limits || {};
  const numberFormat = new Intl.NumberFormat("en");
  const fmtN = (n) => numberFormat.format(n);

  const state = {
    task: null,
    asked: new Set(cfg.questions),
    revealed: false,
    verdictPhase: false,
    regions: [],
    drawing: null, // {type: "box", start, end} | {type: "polygon", points, hover}
    pan: null, // {x, y, ox, oy} while dragging the image
    spaceHeld: false,
    view: { scale: 1, ox: 0, oy: 0 },
    image: null,
    overlay: null,
    saliencyOn: true,
    opacity: 0.6,
    concepts: [],
    freeTags: [],
    startedAt: performance.now(),
    submitting: false,
    justSubmitted: false,
    imageLoaded: Promise.resolve(),
    dirty: false, // changes not yet saved as a draft
    expired: false,
    timers: { draft: 0, heartbeat: 0, poll: 0 },
    fieldErrors: new Map(), // field name -> {box, el, kind: "server" | "limit" | "tag"}
    previousHref: null, // the edit page of the expert's last submitted review of the round
  };

  // --- Small helpers ----------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      // Through the CSSOM: the Content-Security-Policy refuses style attributes.
      else if (k === "style") el.style.cssText = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined && c !== false) el.append(c);
    }
    return el;
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // crypto.randomUUID needs a secure context; getRandomValues does not.
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const x = Array.from(b, (n) => n.toString(16).padStart(2, "0")).join("");
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  function taskUrl(suffix) {
    return cfg.taskUrl.replace("{id}", state.task.id) + (suffix || "");
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.dataset.kind = kind || "";
  }

  function showError(text) {
    const el = $("error");
    el.textContent = text;
    el.hidden = !text;
    delete el.dataset.fields;
  }

  function formatErrors(data) {
    if (!data || typeof data !== "object") return "The server refused the request.";
    if (typeof data.detail === "string") return data.detail;
    return Object.entries(data)
      .map(([field, msgs]) => {
        const name = FIELD_NAMES[field] !== undefined ? FIELD_NAMES[field] : field;
        const text = Array.isArray(msgs) ? msgs.join(" ") : String(msgs);
        return name ? `${name}: ${text}` : text;
      })
      .join(" ");
  }

  // --- Limits and field errors -----------------------------------------------------------

  // Characters as the server counts them (code points, not UTF-16 units).
  function charCount(text) {
    let n = text.length;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0xdc00 && c <= 0xdfff) n--;
    }
    return n;
  }

  function tooLongMessage(limit, length) {
    return `At most ${fmtN(limit)} characters; this has ${fmtN(length)}. Shorten it to submit: your text stays here and in your draft.`;
  }

  /* The counter under a text field ("1,234 / 5,000 characters"); a warning once over. Returns
   * whether the text is over the limit. */
  function updateCounter(input, counter) {
    const limit = Number(counter.dataset.limit);
    const n = charCount(input.value);
    const over = n > limit;
    counter.textContent = over
      ? `${fmtN(n)} / ${fmtN(limit)} characters: ${fmtN(n - limit)} too many`
      : `${fmtN(n)} / ${fmtN(limit)} characters`;
    counter.classList.toggle("over", over);
    if (over) input.setAttribute("aria-invalid", "true");
    else if (!state.fieldErrors.has(input.name)) input.removeAttribute("aria-invalid");
    return over;
  }

  function fieldBox(name) {
    for (const box of document.querySelectorAll(`[data-field~="${CSS.escape(name)}"]`)) {
      if (!box.closest("[hidden]")) return box;
    }
    return null;
  }

  function fieldControls(box) {
    return box.querySelectorAll("input:not([type=hidden]), textarea, select");
  }

  /* Show ``text`` next to the field ``name`` (kind: "server" for a 400's message, "limit" for
   * text over its limit, "tag" for a refused tag). Returns the field's box, or null when the
   * page has no such field in view. */
  function showFieldError(name, text, kind) {
    const box = fieldBox(name);
    if (!box) return null;
    clearFieldError(name);
    const el = h("p", { class: "field-error", id: `field-error-${name}`, "data-field-error": name }, text);
    box.append(el);
    for (const control of fieldControls(box)) {
      const ids = (control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      control.setAttribute("aria-describedby", [...ids, el.id].join(" "));
      control.setAttribute("aria-invalid", "true");
    }
    box.classList.add("has-error");
    state.fieldErrors.set(name, { box, el, kind });
    return box;
  }

  function clearFieldError(name) {
    const entry = state.fieldErrors.get(name);
    if (!entry) return;
    state.fieldErrors.delete(name);
    entry.el.remove();
    for (const control of fieldControls(entry.box)) {
      const ids = (control.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== entry.el.id);
      if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
      else control.removeAttribute("aria-describedby");
      control.removeAttribute("aria-invalid");
    }
    if (![...state.fieldErrors.values()].some((e) => e.box === entry.box)) entry.box.classList.remove("has-error");
    // The summary at the top goes with the last message it summed up.
    if (!state.fieldErrors.size && $("error").dataset.fields) showError("");
  }

  function clearAllFieldErrors() {
    for (const name of [...state.fieldErrors.keys()]) clearFieldError(name);
  }

  // Focus the first field in error (page order), scrolled into view.
  function focusFirstError() {
    const boxes = [...state.fieldErrors.values()].map((e) => e.box);
    if (!boxes.length) return;
    boxes.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
    const box = boxes[0];
    let target;
    if (box.dataset.field === "evidence") target = viewport;
    else {
      const controls = [...fieldControls(box)].filter((c) => !c.matches(":disabled"));
      target = controls.find((c) => c.type === "radio" && c.checked) || controls[0] || box;
    }
    box.scrollIntoView({ block: "center" });
    target.focus({ preventScroll: true });
  }

  /* A 400's messages next to their fields. Returns false when none of the named fields is on
   * the page (the caller then shows the message at the top). */
  function showServerFieldErrors(data) {
    if (!data || typeof data !== "object" || typeof data.detail === "string") return false;
    const shown = [];
    const rest = {};
    for (const [field, msgs] of Object.entries(data)) {
      const text = Array.isArray(msgs) ? msgs.join(" ") : String(msgs);
      if (showFieldError(field, text, "server")) shown.push(field);
      else rest[field] = msgs;
    }
    if (!shown.length) return false;
    const names = shown.map((f) => FIELD_NAMES[f] || f).join(", ");
    const others = Object.keys(rest).length ? ` ${formatErrors(rest)}` : "";
    showError(`Not submitted: see the message next to ${names}.${others}`);
    $("error").dataset.fields = "1";
    focusFirstError();
    return true;
  }

  // Resolves after ``ms``, or at once when the browser says the network is back.
  function pause(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        window.removeEventListener("online", done);
        resolve();
      };
      const t = setTimeout(done, ms);
      window.addEventListener("online", done);
    });
  }

  /* One API call. With ``retry``, network errors and 5xx answers are retried with backoff
   * (same Idempotency-Key each time) until a definite answer comes; 4xx answers return. */
  async function api(method, url, body, opts) {
    const options = opts || {};
    const headers = { Accept: "application/json", "X-CSRFToken": cfg.csrfToken };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    for (let attempt = 0; ; attempt++) {
      let response = null;
      try {
        response = await fetch(url, {
          method,
          headers,
          credentials: "same-origin",
          body: body === undefined ? undefined : JSON.stringify(body),
          keepalive: Boolean(options.keepalive),
        });
      } catch (err) {
        response = null; // the connection dropped: retry below
      }
      if (response && response.status < 500) {
        let data = null;
        if (response.status !== 204) {
          try {
            data = await response.json();
          } catch (err) {
            data = null;
          }
        }
        return { status: response.status, data };
      }
      if (!options.retry) return { status: response ? response.status : 0, data: null };
      const wait = BACKOFF_S[Math.min(attempt, BACKOFF_S.length - 1)];
      setStatus(
        response
          ? `Server error — retrying in ${wait} s… (nothing is lost)`
          : `Offline — retrying in ${wait} s… (nothing is lost)`,
        "offline",
      );
      await pause(wait * 1000);
    }
  }

  function handleFailure(result) {
    if (result.status === 409 && result.data && result.data.round) {
      showClosed(formatErrors(result.data));
      return;
    }
    if (result.status === 409 && result.data && result.data.lease) {
      showExpired(formatErrors(result.data));
      return;
    }
    if (result.status === 403 || result.status === 404) {
      showError(formatErrors(result.data) || "This task is no longer yours.");
    } else {
      showError(formatErrors(result.data));
    }
    setStatus("Not submitted — see the message.", "error");
  }

  // The scientist closed the round: nothing more can be taken or submitted here.
  function showClosed(message) {
    state.expired = true;
    stopTimers();
    showError(message);
    setStatus("Round closed.", "error");
  }

  function showExpired(message) {
    state.expired = true;
    stopTimers();
    showError(`${message} Your draft is kept.`);
    setStatus("Lease expired.", "error");
    const btn = $("next-after-expiry");
    btn.hidden = false;
    btn.focus();
  }

  function stopTimers() {
    clearTimeout(state.timers.draft);
    clearInterval(state.timers.heartbeat);
    clearTimeout(state.timers.poll);
  }

  // --- Loading tasks ----------------------------------------------------------------------

  async function loadNext() {
    stopTimers();
    showError("");
    $("next-after-expiry").hidden = true;
    setStatus("Getting the next image…", "busy");
    const result = await api("POST", cfg.nextUrl, undefined, { retry: true });
    // After the lease, so the task now held counts as one left.
    updateRoundNav(result.status === 200);
    if (result.status === 204) {
      state.task = null;
      $("workspace").hidden = true;
      $("done").hidden = false;
      $("done").querySelector("h2").focus();
      setStatus("All done.", "ok");
      return;
    }
    if (result.status !== 200) {
      $("workspace").hidden = true;
      showError(formatErrors(result.data));
      setStatus("No task.", "error");
      return;
    }
    renderTask(result.data, { fresh: true });
    await state.imageLoaded;
    setStatus(state.justSubmitted ? "Submitted. Next image loaded." : "Ready.", "ok");
    state.justSubmitted = false;
  }

  function hasExpectationQuestions() {
    return EXPECTATION_QUESTIONS.some((q) => state.asked.has(q));
  }

  function renderTask(payload, { fresh }) {
    const sameTask = state.task && state.task.id === payload.id;
    state.task = payload;
    state.asked = new Set(payload.questions);
    state.expired = false;
    state.revealed = Boolean(payload.revealed);
    const expectationDone = Boolean(
      payload.phase === "verdict" || (payload.review && payload.review.expectation_at),
    );
    state.verdictPhase = state.revealed && (expectationDone || !hasExpectationQuestions());
    $("workspace").hidden = false;
    $("workspace").dataset.taskId = payload.id;
    $("done").hidden = true;
    $("task-title").textContent = `Image ${payload.instance.id} (task ${payload.id})`;

    if (fresh || !sameTask) {
      clearAllFieldErrors();
      state.startedAt = performance.now();
      const draft = payload.draft || {};
      const review = payload.review || {};
      const source = expectationDone ? review : draft;
      state.regions = (source.evidence || draft.evidence || []).map((r) => ({
        type: r.type,
        points: r.points.map((p) => [p[0], p[1]]),
      }));
      state.concepts = [...(source.concepts || draft.concepts || [])];
      state.freeTags = [...(source.free_tags || draft.free_tags || [])];
      state.drawing = null;
      buildLabelChoices(payload.label_set);
      buildVocabulary(payload.concept_vocabulary);
      expectationForm.reset();
      verdictForm.reset();
      setRadio("expected_label", source.expected_label || draft.expected_label, true);
      setRadio("expected_confidence", source.expected_confidence || draft.expected_confidence, true);
      for (const name of ["prediction_verdict", "feature_verdict", "severity", "reason"]) {
        setRadio(name, draft[name], true);
      }
      if (typeof draft.acceptable === "boolean") setRadio("acceptable", String(draft.acceptable), true);
      $("comment").value = draft.comment || "";
      updateCounter($("comment"), $("comment-count"));
      loadImage(payload.instance.image_url);
      startHeartbeat(payload.lease_expires_at);
    }
    for (const el of document.querySelectorAll("[data-question]")) {
      el.hidden = !state.asked.has(el.dataset.question);
    }
    const drawing = !state.verdictPhase && state.asked.has("evidence");
    $("draw-tools").hidden = !drawing;
    $("add-box").hidden = !drawing;
    $("regions-panel").hidden = !state.asked.has("evidence");
    expectationForm.hidden = state.verdictPhase || !hasExpectationQuestions();
    verdictForm.hidden = !state.verdictPhase;
    $("expectation-submit").hidden = expectationForm.hidden;
    $("verdict-submit").hidden = verdictForm.hidden;
    renderTags();
    renderRegions();
    renderSummary(expectationDone ? payload.review : null);
    renderReveal();
    updateAcceptability();
  }

  function buildLabelChoices(labels) {
    const box = $("label-choices");
    box.replaceChildren(
      ...labels.map((label, i) =>
        h(
          "label",
          {},
          h("input", { type: "radio", name: "expected_label", value: label }),
          ` ${label} `,
          i < 9 ? h("kbd", {}, String(i + 1)) : null,
        ),
      ),
    );
  }

  function buildVocabulary(words) {
    $("concept-list").replaceChildren(...words.map((w) => h("option", { value: w })));
  }

  // Resolves once the image is fitted (or failed), so "Ready." means the expert can draw.
  function loadImage(url) {
    const img = new Image();
    state.image = img;
    state.overlay = null;
    state.imageLoaded = new Promise((resolve) => {
      img.onload = () => {
        if (state.image === img) fit();
        resolve();
      };
      img.onerror = () => {
        showError("The image could not be loaded.");
        resolve();
      };
    });
    img.src = url;
  }

  // --- Where the expert stands in the round -----------------------------------------------

  /* "n of m left": m is the round's images (tasks / overlap: an expert gets each image at
   * most once), n the images this expert can still be given (the progress API's
   * `available_to_you`: open slots of images they have neither had nor skipped) plus the one
   * they hold. Other experts may take some of those meanwhile, so the next-task answer
   * settles the ends: a task held is at least 1 left, "none left" (204) is 0. */
  async function updateLeft(holding) {
    const result = await api("GET", cfg.progressUrl, undefined, {});
    if (result.status !== 200 || !result.data) return;
    const p = result.data;
    const own = (p.experts || []).find((r) => r.expert === cfg.expert) || {};
    const images = Math.round((p.total || 0) / Math.max(1, cfg.overlap || 1));
    const done = (own.submitted || 0) + (own.skipped || 0);
    const available =
      p.available_to_you !== undefined ? p.available_to_you : Math.min(images - done, p.open || 0);
    const estimate = available + (holding ? 1 : 0);
    const left = holding ? Math.max(1, estimate) : 0;
    const el = $("left");
    el.textContent = `${fmtN(left)} of ${fmtN(images)} ${images === 1 ? "image" : "images"} left for you`;
    el.title = `You submitted ${fmtN(own.submitted || 0)} and skipped ${fmtN(own.skipped || 0)}.`;
    el.dataset.left = left;
  }

  // The expert's last submitted review of this round, for "Previous" (its edit page).
  async function updatePrevious() {
    let result = await api("GET", cfg.reviewsUrl, undefined, {});
    if (result.status !== 200 || !result.data) return;
    let data = result.data;
    const size = (data.results || []).length;
    if (data.next && size) {
      // The list runs oldest first, a page at a time: the last one is on the last page.
      const last = Math.ceil(data.count / size);
      result = await api("GET", `${cfg.reviewsUrl}&page=${last}`, undefined, {});
      if (result.status !== 200 || !result.data) return;
      data = result.data;
    }
    const time = (r) => Date.parse(r.submitted_at) || 0;
    const latest = (data.results || [])
      .filter((r) => r.submitted_at)
      .reduce((a, r) => (!a || time(r) > time(a) || (time(r) === time(a) && r.id > a.id) ? r : a), null);
    setPrevious(latest);
  }

  function setPrevious(review) {
    const link = $("previous");
    if (!review) {
      state.previousHref = null;
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
      link.title = "You have not submitted a review in this round yet";
      return;
    }
    const url = cfg.reviewEditUrl.replace("{id}", review.id);
    state.previousHref = `${url}?next=${encodeURIComponent(cfg.reviewPageUrl)}`;
    link.href = state.previousHref;
    link.removeAttribute("aria-disabled");
    link.title = `Edit your review of image ${review.instance}, the last one you submitted`;
  }

  function updateRoundNav(holding) {
    updateLeft(holding);
    updatePrevious();
  }

  // Leave for the previous review once what was typed here is saved (the lease is kept, and
  // coming back continues this task with its draft).
  async function goPrevious() {
    if (!state.previousHref || state.submitting) return;
    const href = state.previousHref;
    if (state.task && state.dirty && !state.expired) {
      clearTimeout(state.timers.draft);
      setStatus("Saving your draft…", "busy");
      await saveDraft();
    }
    window.location.assign(href);
  }

  $("previous").addEventListener("click", (evt) => {
    if (evt.button !== 0 || evt.ctrlKey || evt.metaKey || evt.shiftKey || evt.altKey) return;
    evt.preventDefault();
    goPrevious();
  });

  // --- The reveal -------------------------------------------------------------------------

  function pct(p) {
    return `${Math.round(p * 100)}%`;
  }

  function renderReveal() {
    const box = $("reveal");
    const task = state.task;
    if (!state.revealed) {
      // Blind-first: nothing of the model's view exists in the page before the expectation.
      box.replaceChildren();
      box.hidden = true;
      $("saliency-tools").hidden = true;
      $("saliency-legend").hidden = true;
      $("saliency-note").hidden = true;
      return;
    }
    box.hidden = false;
    const pred = task.prediction;
    const children = [h("h3", { id: "reveal-title", tabindex: "-1" }, "The model's view")];
    if (pred) {
      children.push(
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Predicted"),
          h("dd", { "data-testid": "prediction" }, h("strong", {}, pred.label), ` (confidence ${pct(pred.confidence)})`),
          h("dt", {}, "Ground truth"),
          h("dd", { "data-testid": "ground-truth" }, task.ground_truth || "not labelled"),
        ),
        h("h4", { id: "top-title" }, "Top classes"),
        h(
          "ul",
          { class: "bars", "aria-labelledby": "top-title", "data-testid": "top-classes" },
          pred.top.map((t) =>
            h(
              "li",
              { class: t.label === pred.label ? "predicted" : "" },
              h("span", { class: "bar-label" }, t.label),
              h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${(t.probability * 100).toFixed(1)}%` })),
              h("span", { class: "bar-value" }, pct(t.probability)),
            ),
          ),
        ),
      );
    } else {
      children.push(h("p", {}, "This model version has no prediction for this image."));
    }
    children.push(h("h4", {}, "Your regions and the saliency"));
    const sal = task.saliency;
    if (sal && !sal.ready && sal.failed) {
      let why = String(sal.failed).trim().replace(/\.$/, "");
      if (why.length > 300) why = `${why.slice(0, 300)}…`;
      children.push(
        h(
          "p",
          { class: "saliency-failed", "data-testid": "saliency-failed" },
          `The saliency map is unavailable: ${why}. Give your verdict anyway; "Can't tell" (k) fits when the highlighted features cannot be judged.`,
        ),
      );
    }
    children.push(renderAlignment());
    box.replaceChildren(...children);
    loadSaliency();
  }

  function renderAlignment() {
    const a = state.task.alignment;
    const sal = state.task.saliency;
    if (sal && !sal.ready && sal.failed) return h("p", { class: "muted" }, "No alignment: the saliency map could not be computed.");
    if (!sal || !sal.ready) return h("p", { class: "muted" }, "The alignment appears once the saliency map is ready.");
    if (!a) {
      return h("p", { class: "muted" }, "You drew no regions, so there is no alignment to measure.");
    }
    return h(
      "div",
      { "data-testid": "alignment" },
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "IoU"),
        h("dd", {}, a.iou.toFixed(2)),
        h("dt", {}, "Your regions covered"),
        h("dd", {}, `${pct(a.ground_truth_coverage)} lie in the model's top ${pct(a.top_fraction)}`),
        h("dt", {}, "Saliency covered"),
        h("dd", {}, `${pct(a.saliency_coverage)} of the model's top ${pct(a.top_fraction)} lies in your regions`),
      ),
    );
  }

  function loadSaliency() {
    const sal = state.task.saliency;
    const note = $("saliency-note");
    clearTimeout(state.timers.poll);
    if (!sal) {
      note.textContent = "This round shows no saliency map.";
      note.hidden = false;
      $("saliency-tools").hidden = true;
      return;
    }
    if (!sal.ready && sal.failed) {
      // The job failed: asking again would not bring it. Say so, and stop.
      note.textContent = "Saliency map unavailable: its computation failed.";
      note.hidden = false;
      $("saliency-tools").hidden = true;
      $("saliency-legend").hidden = true;
      return;
    }
    if (!sal.ready) {
      note.textContent = "The saliency map is still being computed; checking again every 5 seconds.";
      note.hidden = false;
      $("saliency-tools").hidden = true;
      state.timers.poll = setTimeout(pollTask, 5000);
      return;
    }
    note.hidden = true;
    $("saliency-tools").hidden = false;
    if (state.overlay && state.overlay.dataset.url === sal.overlay_url) return;
    const img = new Image();
    img.dataset.url = sal.overlay_url;
    img.onload = () => {
      if (state.overlay !== img) return;
      img.dataset.ready = "1";
      drawLegend();
      draw();
    };
    img.onerror = () => {
      note.textContent = "The saliency map could not be loaded.";
      note.hidden = false;
    };
    state.overlay = img;
    img.src = sal.overlay_url;
  }

  async function pollTask() {
    if (!state.task) return;
    const id = state.task.id;
    const result = await api("GET", taskUrl(), undefined, {});
    if (!state.task || state.task.id !== id) return;
    if (result.status === 200) {
      state.task.saliency = result.data.saliency;
      state.task.alignment = result.data.alignment;
      renderReveal();
    } else {
      state.timers.poll = setTimeout(pollTask, 5000);
    }
  }

  function drawLegend() {
    const img = state.overlay;
    const legend = $("saliency-legend");
    const lh = state.task.saliency.legend_height || 0;
    if (!lh || !img) return;
    // At its own size: the legend's text is rendered for it and blurs when scaled.
    legend.width = img.naturalWidth;
    legend.height = lh;
    legend.getContext("2d").drawImage(img, 0, img.naturalHeight - lh, img.naturalWidth, lh, 0, 0, legend.width, legend.height);
    legend.hidden = false;
  }

  function renderSummary(review) {
    const box = $("expectation-summary");
    if (!review) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const parts = [];
    if (review.expected_label) parts.push(`label ${review.expected_label}`);
    if (review.expected_confidence) parts.push(`confidence ${review.expected_confidence}/5`);
    if (review.evidence && review.evidence.length) parts.push(`${review.evidence.length} region(s)`);
    const tags = [...(review.concepts || []), ...(review.free_tags || [])];
    if (tags.length) parts.push(`tags ${tags.join(", ")}`);
    box.replaceChildren(h("h3", {}, "1 · Your expectation (submitted)"), h("p", {}, parts.join(" · ") || "—"));
    box.hidden = false;
  }

  // --- Canvas: zoom, pan, drawing ---------------------------------------------------------

  function imageSize() {
    return { w: state.task.instance.width, h: state.task.instance.height };
  }

  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(viewport.clientWidth * dpr));
    canvas.height = Math.max(1, Math.round(viewport.clientHeight * dpr));
  }

  function fit() {
    if (!state.task) return;
    resizeCanvas();
    const { w, h: ih } = imageSize();
    const cw = viewport.clientWidth;
    const ch = viewport.clientHeight;
    const scale = Math.min(cw / w, ch / ih) * 0.98;
    state.view = { scale, ox: (cw - w * scale) / 2, oy: (ch - ih * scale) / 2 };
    draw();
  }

  function zoomAt(factor, sx, sy) {
    const v = state.view;
    const { w, h: ih } = imageSize();
    const minScale = Math.min(viewport.clientWidth / w, viewport.clientHeight / ih) / 4;
    const scale = Math.min(64, Math.max(minScale, v.scale * factor));
    const px = sx === undefined ? viewport.clientWidth / 2 : sx;
    const py = sy === undefined ? viewport.clientHeight / 2 : sy;
    // Keep the image point under (px, py) where it is.
    v.ox = px - ((px - v.ox) * scale) / v.scale;
    v.oy = py - ((py - v.oy) * scale) / v.scale;
    v.scale = scale;
    draw();
  }

  function panBy(dx, dy) {
    state.view.ox += dx;
    state.view.oy += dy;
    draw();
  }

  function toImage(evt) {
    const rect = canvas.getBoundingClientRect();
    const { w, h: ih } = imageSize();
    const v = state.view;
    const x = (evt.clientX - rect.left - v.ox) / v.scale;
    const y = (evt.clientY - rect.top - v.oy) / v.scale;
    // The API refuses points outside the image; a drag past the edge stops at it.
    const clamp = (n, hi) => Math.round(Math.min(hi, Math.max(0, n)) * 10) / 10;
    return [clamp(x, w), clamp(y, ih)];
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#2b2f36";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!state.task || !state.image || !state.image.complete || !state.image.naturalWidth) return;
    const v = state.view;
    const { w, h: ih } = imageSize();
    ctx.setTransform(dpr * v.scale, 0, 0, dpr * v.scale, dpr * v.ox, dpr * v.oy);
    // Past 3x, show the pixels as they are: experts judge small images pixel by pixel.
    ctx.imageSmoothingEnabled = v.scale < 3;
    ctx.drawImage(state.image, 0, 0, w, ih);
    const ov = state.overlay;
    if (state.revealed && state.saliencyOn && ov && ov.dataset.ready) {
      const lh = state.task.saliency.legend_height || 0;
      ctx.globalAlpha = state.opacity;
      ctx.drawImage(ov, 0, 0, ov.naturalWidth, ov.naturalHeight - lh, 0, 0, w, ih);
      ctx.globalAlpha = 1;
    }
    state.regions.forEach((r, i) => drawRegion(r, i + 1, false));
    if (state.drawing) drawRegion(state.drawing, null, true);
    $("zoom-level").textContent = `${Math.round(v.scale * 100)}%`;
  }

  function regionPath(r) {
    ctx.beginPath();
    if (r.type === "box") {
      const [a, b] = r.points || [r.start, r.end];
      ctx.rect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
      return;
    }
    const pts = r.hover ? [...r.points, r.hover] : r.points;
    pts.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
    if (!r.hover) ctx.closePath();
  }

  function drawRegion(r, n, pending) {
    const px = 1 / state.view.scale;
    const shape = r.type === "box" && pending ? { type: "box", points: [r.start, r.end] } : r;
    ctx.setLineDash(pending ? [6 * px, 4 * px] : []);
    // Dark under light: visible on any image and over any saliency colour.
    regionPath(shape);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 4 * px;
    ctx.stroke();
    ctx.strokeStyle = "#00e5ff";
    ctx.lineWidth = 2 * px;
    ctx.stroke();
    ctx.setLineDash([]);
    if (shape.type === "polygon") {
      for (const p of shape.points) {
        ctx.fillStyle = "#00e5ff";
        ctx.fillRect(p[0] - 2 * px, p[1] - 2 * px, 4 * px, 4 * px);
      }
    }
    if (n !== null) {
      const p = shape.points[0];
      ctx.font = `bold ${14 * px}px system-ui, sans-serif`;
      ctx.fillStyle = "#000";
      ctx.fillRect(p[0], p[1], 16 * px, 16 * px);
      ctx.fillStyle = "#fff";
      ctx.fillText(String(n), p[0] + 4 * px, p[1] + 13 * px);
    }
  }

  function canDraw() {
    return state.task && !state.verdictPhase && state.asked.has("evidence") && !state.expired;
  }

  function tool() {
    const checked = document.querySelector('input[name="tool"]:checked');
    return checked ? checked.value : "box";
  }

  function setTool(value) {
    setRadio("tool", value);
    state.drawing = null;
    draw();
  }

  canvas.addEventListener("pointerdown", (evt) => {
    // Before the image is fitted, screen points map to no meaningful image pixel.
    if (!state.task || !state.image || !state.image.naturalWidth) return;
    viewport.focus({ preventScroll: true });
    const panning = evt.button === 1 || state.spaceHeld || tool() === "pan" || !canDraw();
    if (panning) {
      state.pan = { x: evt.clientX, y: evt.clientY, ox: state.view.ox, oy: state.view.oy };
      canvas.setPointerCapture(evt.pointerId);
      evt.preventDefault();
      return;
    }
    if (evt.button !== 0) return;
    const p = toImage(evt);
    if (tool() === "box") {
      state.drawing = { type: "box", start: p, end: p };
      canvas.setPointerCapture(evt.pointerId);
    } else {
      if (!state.drawing || state.drawing.type !== "polygon") {
        state.drawing = { type: "polygon", points: [], hover: p };
      }
      const last = state.drawing.points[state.drawing.points.length - 1];
      // The two presses of a double-click land on one spot: keep one point.
      if (!last || Math.hypot(last[0] - p[0], last[1] - p[1]) * state.view.scale > 3) {
        state.drawing.points.push(p);
      }
    }
    draw();
  });

  canvas.addEventListener("pointermove", (evt) => {
    if (state.pan) {
      state.view.ox = state.pan.ox + evt.clientX - state.pan.x;
      state.view.oy = state.pan.oy + evt.clientY - state.pan.y;
      draw();
    } else if (state.drawing) {
      const p = toImage(evt);
      if (state.drawing.type === "box") state.drawing.end = p;
      else state.drawing.hover = p;
      draw();
    }
  });

  canvas.addEventListener("pointerup", () => {
    if (state.pan) {
      state.pan = null;
      return;
    }
    const d = state.drawing;
    if (d && d.type === "box") {
      state.drawing = null;
      const [x0, x1] = [Math.min(d.start[0], d.end[0]), Math.max(d.start[0], d.end[0])];
      const [y0, y1] = [Math.min(d.start[1], d.end[1]), Math.max(d.start[1], d.end[1])];
      // A click without a drag is not a box.
      if ((x1 - x0) * state.view.scale > 2 && (y1 - y0) * state.view.scale > 2) {
        addRegion({ type: "box", points: [[x0, y0], [x1, y1]] });
      } else {
        draw();
      }
    }
  });

  canvas.addEventListener("dblclick", (evt) => {
    evt.preventDefault();
    closePolygon();
  });

  canvas.addEventListener(
    "wheel",
    (evt) => {
      if (!state.task) return;
      evt.preventDefault();
      const rect = canvas.getBoundingClientRect();
      zoomAt(evt.deltaY < 0 ? 1.2 : 1 / 1.2, evt.clientX - rect.left, evt.clientY - rect.top);
    },
    { passive: false },
  );

  function closePolygon() {
    const d = state.drawing;
    if (!d || d.type !== "polygon") return false;
    state.drawing = null;
    if (d.points.length >= 3) {
      addRegion({ type: "polygon", points: d.points });
    } else {
      setStatus("A polygon needs at least 3 points.", "error");
      draw();
    }
    return true;
  }

  function addRegion(region) {
    state.regions.push(region);
    renderRegions();
    draw();
    scheduleDraft();
  }

  function undoRegion() {
    if (state.drawing) {
      state.drawing = null;
    } else if (state.regions.length) {
      state.regions.pop();
      renderRegions();
      scheduleDraft();
    }
    draw();
  }

  function fmt(p) {
    return `(${Math.round(p[0])}, ${Math.round(p[1])})`;
  }

  function renderRegions() {
    const list = $("regions");
    const editable = canDraw();
    list.replaceChildren(
      ...state.regions.map((r, i) =>
        h(
          "li",
          {},
          r.type === "box"
            ? `Box ${fmt(r.points[0])}–${fmt(r.points[1])}`
            : `Polygon of ${r.points.length} points from ${fmt(r.points[0])}`,
          editable
            ? h(
                "button",
                {
                  type: "button",
                  class: "link",
                  "aria-label": `Remove region ${i + 1}`,
                  onclick: () => {
                    state.regions.splice(i, 1);
                    renderRegions();
                    draw();
                    scheduleDraft();
                  },
                },
                "Remove",
              )
            : null,
        ),
      ),
    );
    $("regions-empty").hidden = state.regions.length > 0;
  }

  $("add-box-form").addEventListener("submit", (evt) => {
    evt.preventDefault();
    const f = evt.target.elements;
    const { w, h: ih } = imageSize();
    const vals = ["x0", "y0", "x1", "y1"].map((k) => Number(f[k].value));
    const [x0, y0, x1, y1] = vals;
    if (vals.some((n) => Number.isNaN(n)) || Math.max(x0, x1) > w || Math.max(y0, y1) > ih || Math.min(...vals) < 0) {
      setStatus(`A box must lie within the image (0–${w} x 0–${ih}).`, "error");
      return;
    }
    addRegion({ type: "box", points: [[Math.min(x0, x1), Math.min(y0, y1)], [Math.max(x0, x1), Math.max(y0, y1)]] });
    evt.target.reset();
  });

  // --- Tags -------------------------------------------------------------------------------

  /* Add the typed tag. Returns false when it is refused (longer than a free tag may be, or
   * one free tag too many): the message says why, and the text stays in the field. */
  function addTag(text) {
    const value = text.trim();
    if (!value) return true;
    const vocab = state.task.concept_vocabulary;
    const known = vocab.find((w) => w.toLowerCase() === value.toLowerCase());
    if (known) {
      if (!state.concepts.includes(known)) state.concepts.push(known);
    } else if (!state.freeTags.includes(value)) {
      const length = charCount(value);
      if (LIMITS.free_tag && length > LIMITS.free_tag) {
        showFieldError(
          "free_tags",
          `A free tag has at most ${fmtN(LIMITS.free_tag)} characters; this one has ${fmtN(length)}. Shorten it to add it (it stays in the field).`,
          "tag",
        );
        return false;
      }
      if (LIMITS.free_tags && state.freeTags.length >= LIMITS.free_tags) {
        showFieldError("free_tags", `At most ${fmtN(LIMITS.free_tags)} free tags; remove one to add another.`, "tag");
        return false;
      }
      state.freeTags.push(value);
    }
    clearFieldError("free_tags");
    clearFieldError("concepts");
    renderTags();
    scheduleDraft();
    return true;
  }

  function renderTags() {
    const chip = (text, kind, list) =>
      h(
        "li",
        { class: `chip ${kind}` },
        h("span", {}, text),
        h("span", { class: "visually-hidden" }, kind === "concept" ? " (concept)" : " (free tag)"),
        state.verdictPhase
          ? null
          : h(
              "button",
              {
                type: "button",
                "aria-label": `Remove tag ${text}`,
                onclick: () => {
                  list.splice(list.indexOf(text), 1);
                  clearFieldError("free_tags");
                  clearFieldError("concepts");
                  renderTags();
                  scheduleDraft();
                  $("tag-input").focus();
                },
              },
              "×",
            ),
      );
    $("tags").replaceChildren(
      ...state.concepts.map((c) => chip(c, "concept", state.concepts)),
      ...state.freeTags.map((t) => chip(t, "free", state.freeTags)),
    );
  }

  $("tag-input").addEventListener("keydown", (evt) => {
    if (evt.key === "Enter" && !evt.ctrlKey && !evt.metaKey) {
      evt.preventDefault();
      if (addTag(evt.target.value)) evt.target.value = "";
    } else if (evt.key === "Backspace" && !evt.target.value) {
      if (state.freeTags.length) state.freeTags.pop();
      else state.concepts.pop();
      renderTags();
      scheduleDraft();
    }
  });

  // --- Form state -------------------------------------------------------------------------

  function radioValue(name) {
    const el = document.querySelector(`input[name="${name}"]:checked`);
    return el ? el.value : null;
  }

  /* Check a radio as if the expert had clicked it (a change event follows, which saves the
   * draft). ``restore`` sets it silently, even in a disabled group, when a draft comes back. */
  function setRadio(name, value, restore) {
    if (value === null || value === undefined) return false;
    const el = document.querySelector(`input[name="${name}"][value="${CSS.escape(String(value))}"]`);
    if (!el || (!restore && el.matches(":disabled"))) return false;
    el.checked = true;
    if (!restore) el.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  function updateAcceptability() {
    const on = radioValue("prediction_verdict") === "incorrect";
    $("acceptability").disabled = !on;
  }

  document.addEventListener("change", (evt) => {
    if (evt.target.name === "prediction_verdict") updateAcceptability();
    if (evt.target.id === "saliency-on") {
      state.saliencyOn = evt.target.checked;
      draw();
      return;
    }
    if (evt.target.id === "opacity") return;
    if (evt.target.name === "tool") {
      state.drawing = null;
      draw();
      return;
    }
    if (evt.target.closest("#expectation-form, #verdict-form")) scheduleDraft();
  });
  $("opacity").addEventListener("input", (evt) => {
    state.opacity = Number(evt.target.value) / 100;
    draw();
  });
  $("comment").addEventListener("input", (evt) => {
    const over = updateCounter(evt.target, $("comment-count"));
    const entry = state.fieldErrors.get("comment");
    // A refusal for length stays until the text fits; the server's other messages go with
    // the first change (below).
    if (entry && (entry.kind !== "limit" || !over)) clearFieldError("comment");
    scheduleDraft();
  });

  // A field's message goes once the expert changes that field.
  function clearOnChange(evt) {
    const box = evt.target.closest && evt.target.closest("[data-field]");
    if (!box || evt.target.id === "comment") return;
    for (const name of box.dataset.field.split(" ")) {
      const entry = state.fieldErrors.get(name);
      if (entry && entry.kind !== "limit") clearFieldError(name);
    }
  }
  document.addEventListener("input", clearOnChange);
  document.addEventListener("change", clearOnChange);

  function collectDraft() {
    const conf = radioValue("expected_confidence");
    const acc = radioValue("acceptable");
    const sev = radioValue("severity");
    return {
      expected_label: radioValue("expected_label"),
      expected_confidence: conf ? Number(conf) : null,
      evidence: state.regions,
      concepts: state.concepts,
      free_tags: state.freeTags,
      prediction_verdict: radioValue("prediction_verdict"),
      feature_verdict: radioValue("feature_verdict"),
      acceptable: acc === null ? null : acc === "true",
      severity: sev ? Number(sev) : null,
      reason: radioValue("reason"),
      comment: $("comment").value,
    };
  }

  function scheduleDraft() {
    if (!state.task || state.submitting || state.expired) return;
    clearTimeout(state.timers.draft);
    state.dirty = true;
    setStatus("Unsaved changes…", "busy");
    state.timers.draft = setTimeout(saveDraft, DRAFT_DELAY_MS);
  }

  async function saveDraft(opts) {
    if (!state.task || state.submitting || state.expired) return;
    const id = state.task.id;
    const result = await api("PUT", taskUrl("draft"), collectDraft(), opts || {});
    if (!state.task || state.task.id !== id || state.submitting) return;
    if (result.status === 200) {
      state.dirty = false;
      setStatus("Saved", "ok");
    } else if (result.status === 0 || result.status >= 500) {
      setStatus("Offline — your draft will be saved when the connection is back.", "offline");
      state.timers.draft = setTimeout(saveDraft, 5000);
    } else if (result.status === 400) {
      // Too big, or a character the database cannot keep: say so; the page keeps the text.
      showError(`Your draft was not saved: ${formatErrors(result.data)} What you typed stays on this page.`);
      setStatus("Draft not saved — see the message.", "error");
    } else {
      handleFailure(result);
    }
  }

  // --- Lease ------------------------------------------------------------------------------

  function startHeartbeat(expiresAt) {
    clearInterval(state.timers.heartbeat);
    const left = expiresAt ? new Date(expiresAt).getTime() - Date.now() : cfg.leaseSeconds * 1000;
    // Several beats per lease, so one lost beat does not cost the lease.
    const every = Math.min(120000, Math.max(10000, Math.min(left, cfg.leaseSeconds * 1000) / 3));
    state.timers.heartbeat = setInterval(heartbeat, every);
  }

  async function heartbeat() {
    if (!state.task || state.expired) return;
    const result = await api("POST", taskUrl("heartbeat"), undefined, {});
    if (result.status === 409 && result.data && result.data.round) {
      showClosed(formatErrors(result.data));
    } else if (result.status === 409) {
      showExpired(formatErrors(result.data));
    }
  }

  // --- Submits ----------------------------------------------------------------------------

  async function submit(kind) {
    if (!state.task || state.submitting) return;
    if (state.expired) {
      $("next-after-expiry").focus();
      return;
    }
    if (kind === "expectation" && state.asked.has("concepts")) {
      const pending = $("tag-input").value;
      if (pending.trim()) {
        if (!addTag(pending)) {
          setStatus("Not submitted — see the message next to the tags.", "error");
          focusFirstError();
          return;
        }
        $("tag-input").value = "";
      }
    }
    if (kind === "verdict" && state.asked.has("comment") && refuseTooLong("comment", $("comment"), LIMITS.comment)) {
      setStatus("Not submitted — the comment is too long.", "error");
      // The text stays in the field; make sure the draft has it too.
      if (state.dirty) {
        clearTimeout(state.timers.draft);
        saveDraft();
      }
      return;
    }
    const draft = collectDraft();
    const pick = (names) => Object.fromEntries(names.filter((n) => state.asked.has(n)).map((n) => [n, draft[n]]));
    let body;
    if (kind === "expectation") {
      body = pick(["expected_label", "expected_confidence", "evidence", "concepts"]);
      if (state.asked.has("concepts")) body.free_tags = draft.free_tags;
    } else {
      body = pick(["prediction_verdict", "feature_verdict", "comment"]);
      if (state.asked.has("acceptability") && draft.prediction_verdict === "incorrect") {
        Object.assign(body, { acceptable: draft.acceptable, severity: draft.severity, reason: draft.reason });
      }
      body.client_seconds = Math.round((performance.now() - state.startedAt) / 100) / 10;
    }
    state.submitting = true;
    clearTimeout(state.timers.draft);
    showError("");
    clearAllFieldErrors();
    setStatus(kind === "expectation" ? "Submitting your expectation…" : "Submitting your verdict…", "busy");
    // One key per submit, reused by every retry: the server acts once and replays after.
    const key = uuid();
    const url = taskUrl(kind);
    let result;
    try {
      result = await api("POST", url, body, { idempotencyKey: key, retry: true });
    } finally {
      state.submitting = false;
    }
    if (result.status !== 200) {
      if (result.status === 400 && showServerFieldErrors(result.data)) {
        setStatus("Not submitted — see the message next to the field.", "error");
        return;
      }
      handleFailure(result);
      return;
    }
    state.dirty = false;
    if (kind === "expectation") {
      renderTask(result.data, { fresh: false });
      setStatus("Expectation submitted. Here is the model's view.", "ok");
      const title = $("reveal-title");
      if (title) title.focus();
      else viewport.focus();
    } else {
      state.justSubmitted = true;
      setStatus("Submitted", "ok");
      await loadNext();
      if (state.task) viewport.focus();
    }
  }

  /* Text over its limit: the message next to the field, the focus in it; nothing is sent
   * and the text stays. Returns whether it refused. */
  function refuseTooLong(name, input, limit) {
    const length = charCount(input.value);
    if (!limit || length <= limit) return false;
    showFieldError(name, tooLongMessage(limit, length), "limit");
    input.scrollIntoView({ block: "center" });
    input.focus({ preventScroll: true });
    return true;
  }

  expectationForm.addEventListener("submit", (evt) => {
    evt.preventDefault();
    submit("expectation");
  });
  verdictForm.addEventListener("submit", (evt) => {
    evt.preventDefault();
    submit("verdict");
  });

  // --- Skip -------------------------------------------------------------------------------

  const dialog = $("skip-dialog");
  function openSkip() {
    if (!state.task || state.submitting) return;
    dialog.showModal();
    dialog.querySelector('input[name="skip_reason"]:checked').focus();
  }
  $("skip-button").addEventListener("click", openSkip);
  $("skip-other").addEventListener("input", (evt) => {
    setRadio("skip_reason", "other", true);
    const over = updateCounter(evt.target, $("skip-other-count"));
    if (!over) clearSkipError();
  });

  function clearSkipError() {
    const el = $("skip-error");
    if (el) el.remove();
    $("skip-other").removeAttribute("aria-invalid");
  }

  function showSkipError(text) {
    clearSkipError();
    const input = $("skip-other");
    input.after(h("p", { class: "field-error", id: "skip-error" }, text));
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "skip-other-count skip-error");
    input.focus();
  }
  $("skip-form").addEventListener("submit", async (evt) => {
    const action = evt.submitter ? evt.submitter.value : "skip";
    if (action !== "skip") return;
    let reason = radioValue("skip_reason");
    if (reason === "other") reason = $("skip-other").value.trim();
    if (!reason) {
      evt.preventDefault();
      showSkipError("Say why, or choose one of the reasons above.");
      return;
    }
    const length = charCount(reason);
    if (LIMITS.skip_reason && length > LIMITS.skip_reason) {
      evt.preventDefault(); // the dialog stays open with the text
      showSkipError(tooLongMessage(LIMITS.skip_reason, length).replace(" and in your draft", ""));
      return;
    }
    clearSkipError();
    clearTimeout(state.timers.draft);
    setStatus("Skipping…", "busy");
    const result = await api("POST", taskUrl("skip"), { reason }, { retry: true });
    if (result.status === 204) {
      setStatus("Skipped.", "ok");
      await loadNext();
      if (state.task) viewport.focus();
    } else if (result.status === 400 && result.data && result.data.reason) {
      // Back to the dialog, the reason as typed, the server's message next to it.
      setStatus("Not skipped — see the message.", "error");
      dialog.showModal();
      setRadio("skip_reason", "other", true);
      if (!$("skip-other").value) $("skip-other").value = reason;
      showSkipError(formatErrors({ reason: result.data.reason }).replace(/^Reason: /, ""));
    } else {
      handleFailure(result);
    }
  });

  $("next-after-expiry").addEventListener("click", async () => {
    await loadNext();
    if (state.task) viewport.focus();
  });

  // --- Keyboard ---------------------------------------------------------------------------

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    return el.tagName === "INPUT" && !["radio", "checkbox", "range", "button", "submit"].includes(el.type);
  }

  function focusText() {
    const el = state.verdictPhase ? $("comment") : $("tag-input");
    if (el && !el.closest("[hidden]")) el.focus();
  }

  function onKey(evt) {
    if (dialog.open) return;
    const target = evt.target;
    if (!state.task) {
      // Done or no task: "Previous" still leads back to the last review.
      const plain = !evt.altKey && !evt.ctrlKey && !evt.metaKey && !isTyping(target);
      if (plain && evt.key.toLowerCase() === "l" && state.previousHref) {
        evt.preventDefault();
        goPrevious();
      }
      return;
    }
    if (evt.key === "Enter" && (evt.ctrlKey || evt.metaKey)) {
      evt.preventDefault();
      submit(state.verdictPhase ? "verdict" : "expectation");
      return;
    }
    if (isTyping(target)) {
      if (evt.key === "Escape") {
        evt.preventDefault();
        target.blur();
        viewport.focus();
      }
      return;
    }
    if (evt.altKey || evt.ctrlKey || evt.metaKey) {
      if ((evt.ctrlKey || evt.metaKey) && evt.key.toLowerCase() === "z" && canDraw()) {
        evt.preventDefault();
        undoRegion();
      }
      return;
    }
    const digit = /^(?:Digit|Numpad)([0-9])$/.exec(evt.code);
    const n = digit ? Number(digit[1]) : null;
    const verdict = state.verdictPhase;
    let handled = true;
    if (n !== null && n >= 1 && evt.shiftKey) {
      if (!verdict) setRadio("expected_confidence", String(n));
      else setRadio("reason", (cfg.reasonChoices[n - 1] || {}).value);
    } else if (n !== null && n >= 1) {
      if (!verdict) setRadio("expected_label", (state.task.label_set || [])[n - 1]);
      else setRadio("severity", String(n));
    } else if (evt.key === "0" || n === 0) {
      fit();
    } else if (evt.key === "+" || evt.key === "=") {
      zoomAt(1.25);
    } else if (evt.key === "-" || evt.key === "_") {
      zoomAt(1 / 1.25);
    } else if (evt.key.startsWith("Arrow")) {
      if (target.type === "radio" || target.type === "range") return; // their own arrows
      const step = 40;
      const d = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] }[evt.key];
      panBy(d[0], d[1]);
    } else if (evt.key === " ") {
      if (["BUTTON", "A", "SUMMARY"].includes(target.tagName) || target.type === "radio" || target.type === "checkbox") return;
      state.spaceHeld = true;
    } else if (evt.key === "Enter") {
      if (["BUTTON", "A", "SUMMARY"].includes(target.tagName)) return; // activate it
      if (!closePolygon()) submit(verdict ? "verdict" : "expectation");
    } else if (evt.key === "Escape") {
      state.drawing = null;
      draw();
    } else {
      handled = letterKey(evt.key.toLowerCase(), verdict);
    }
    if (handled) evt.preventDefault();
  }

  function letterKey(key, verdict) {
    const byKey = (choices) => (choices.find((c) => c.key === key) || {}).value;
    switch (key) {
      case "t":
        focusText();
        return true;
      case "s":
        openSkip();
        return true;
      case "l":
        if (!state.previousHref) {
          setStatus("No previous review: you have not submitted one in this round yet.", "error");
          return true;
        }
        goPrevious();
        return true;
      case "b":
      case "p":
      case "m":
        if (!canDraw()) return false;
        setTool({ b: "box", p: "polygon", m: "pan" }[key]);
        return true;
      case "u":
        if (!canDraw()) return false;
        undoRegion();
        return true;
      case "v":
        if (!state.revealed) return false;
        $("saliency-on").click();
        return true;
      case "[":
      case "]": {
        if (!state.revealed) return false;
        const slider = $("opacity");
        slider.value = Math.min(100, Math.max(0, Number(slider.value) + (key === "]" ? 10 : -10)));
        slider.dispatchEvent(new Event("input"));
        return true;
      }
      case "y":
      case "n":
        return verdict && setRadio("acceptable", key === "y" ? "true" : "false");
      default:
        if (!verdict) return false;
        return setRadio("prediction_verdict", byKey(cfg.predictionChoices)) || setRadio("feature_verdict", byKey(cfg.featureChoices));
    }
  }

  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (evt) => {
    if (evt.key === " ") state.spaceHeld = false;
  });

  // --- Page life --------------------------------------------------------------------------

  document.querySelector(".toolbar").addEventListener("click", (evt) => {
    const btn = evt.target.closest("button[data-action]");
    if (!btn || !state.task) return;
    const action = btn.dataset.action;
    if (action === "zoom-in") zoomAt(1.25);
    else if (action === "zoom-out") zoomAt(1 / 1.25);
    else if (action === "fit") fit();
    else if (action === "undo") undoRegion();
  });

  if (window.ResizeObserver) {
    new ResizeObserver(() => {
      if (!state.task) return;
      const { scale } = state.view;
      resizeCanvas();
      if (scale) draw();
    }).observe(viewport);
  }

  /* Side by side, the image column sticks to the top of the window (review.css). A column
   * taller than the window would hide its own lower part (the regions) until the end of the
   * page, so it then sticks by its bottom edge instead: everything in it stays reachable. */
  const stage = document.querySelector(".stage");
  function updateStageTop() {
    const top = Math.min(0, window.innerHeight - stage.offsetHeight);
    stage.style.setProperty("--stage-top", `${top}px`);
  }
  if (window.ResizeObserver) new ResizeObserver(updateStageTop).observe(stage);
  window.addEventListener("resize", updateStageTop);

  // Leaving the page: save what is pending (keepalive lets the request outlive the page).
  window.addEventListener("pagehide", () => {
    if (state.task && !state.submitting && !state.expired && state.dirty) {
      clearTimeout(state.timers.draft);
      saveDraft({ keepalive: true });
    }
  });
  window.addEventListener("offline", () => setStatus("Offline — your work stays on this page.", "offline"));

  loadNext().then(() => {
    if (state.task) viewport.focus({ preventScroll: true });
  });
})();
