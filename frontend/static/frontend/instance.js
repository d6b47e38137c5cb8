/* Instance page and confusion-matrix cell: the saliency overlay (toggle `v`, opacity `[` `]`),
 * previous / next in the list the page was opened from (`j` / `k`), and "compute saliency"
 * through the explanation API with the job's progress polled until the maps are there.
 * Plain JS, no build step. Without it the pages still work: the compute forms post to the
 * page, the overlay is shown at full strength, the list links are links. */
(function () {
  "use strict";

  const POLL_MS = 1000;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(method, url, body) {
    const res = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": csrfToken(),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await res.json();
    } catch (err) {
      data = null;
    }
    return { status: res.status, data };
  }

  /* A 400's body names the field: {"method": ["..."]} -> "method: ...". */
  function errorText(data, status) {
    if (data && typeof data === "object") {
      const parts = Object.entries(data).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" ") : v}`);
      if (parts.length) return parts.join("; ");
    }
    return `The server answered ${status}.`;
  }

  function typing(event) {
    const el = event.target;
    return (
      el instanceof HTMLElement &&
      (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)) &&
      !(el.tagName === "INPUT" && ["range", "radio", "checkbox", "button"].includes(el.type))
    );
  }

  // --- Overlay -----------------------------------------------------------------------------

  const stage = document.querySelector("[data-stage]");
  const overlay = document.querySelector("[data-overlay]");
  const toggle = document.querySelector("[data-overlay-toggle]");
  const slider = document.querySelector("[data-overlay-opacity]");
  const legend = document.querySelector("[data-overlay-legend]");

  /* The overlay PNG is the picture with a legend strip below it. The picture is stretched
   * over the image (the map is at the model's input size, often square) and the strip is
   * drawn apart, at its own pixel size so its text stays sharp and readable. */
  function fitOverlay() {
    if (!overlay || !overlay.naturalWidth) return;
    const lh = Number(overlay.dataset.legendHeight || 0);
    const pictureHeight = overlay.naturalHeight - lh;
    if (pictureHeight <= 0) return;
    overlay.style.height = `${(100 * overlay.naturalHeight) / pictureHeight}%`;
    if (legend && lh > 0) {
      legend.width = overlay.naturalWidth;
      legend.height = lh;
      legend
        .getContext("2d")
        .drawImage(overlay, 0, pictureHeight, overlay.naturalWidth, lh, 0, 0, legend.width, lh);
      legend.hidden = false;
    }
    overlay.dataset.fitted = "true";
  }

  function setShown(shown) {
    if (!overlay) return;
    overlay.parentElement.hidden = !shown;
    toggle.setAttribute("aria-pressed", String(shown));
    toggle.firstChild.textContent = shown ? "Saliency shown " : "Saliency hidden ";
    if (legend) legend.style.visibility = shown ? "visible" : "hidden";
  }

  function setOpacity(percent) {
    if (!overlay) return;
    const value = Math.max(0, Math.min(100, percent));
    slider.value = String(value);
    slider.setAttribute("aria-valuetext", `${value} %`);
    overlay.style.opacity = String(value / 100);
    if (value > 0 && overlay.parentElement.hidden) setShown(true);
  }

  if (overlay) {
    if (overlay.complete) fitOverlay();
    overlay.addEventListener("load", fitOverlay);
    toggle.addEventListener("click", () => setShown(overlay.parentElement.hidden));
    slider.addEventListener("input", () => setOpacity(Number(slider.value)));
    setOpacity(Number(slider.value));
  }

  // The map chooser is a plain GET form with a Show button: changing the select with the
  // arrow keys must not leave the page on every step.

  // --- Keys --------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event)) {
      return;
    }
    const prev = document.querySelector("[data-nav-prev]");
    const next = document.querySelector("[data-nav-next]");
    if (overlay && (event.key === "v" || event.key === "V")) {
      setShown(overlay.parentElement.hidden);
    } else if (overlay && event.key === "[") {
      setOpacity(Number(slider.value) - 10);
    } else if (overlay && event.key === "]") {
      setOpacity(Number(slider.value) + 10);
    } else if (event.key === "j" && next) {
      window.location.href = next.href;
    } else if (event.key === "k" && prev) {
      window.location.href = prev.href;
    } else {
      return;
    }
    event.preventDefault();
  });

  // --- Compute saliency --------------------------------------------------------------------

  const form = document.querySelector("[data-saliency-compute]");
  if (!form) return;
  const methodSelect = form.querySelector("[data-method]");
  const targetSelect = form.querySelector("[data-target]");
  const otherRadio = form.querySelector("[data-explain-other]");
  const button = form.querySelector("[data-compute-button]");
  const jobLine = form.querySelector("[data-job]");
  const bar = form.querySelector("[data-job-progress]");
  const statusText = form.querySelector("[data-job-status]");
  const mvSelect = form.querySelector("[data-model-version]");

  // Choosing a class means "why P and not Q".
  targetSelect.addEventListener("change", () => {
    otherRadio.checked = true;
  });

  /* Instance page: each model version offers the methods it can compute, and its own
   * predicted class P. */
  if (mvSelect) {
    const labels = {};
    for (const option of methodSelect.options) labels[option.value] = option.textContent;
    const known = { ...labels };
    const sync = () => {
      const option = mvSelect.selectedOptions[0];
      const wanted = (option.dataset.methods || "").split(",").filter(Boolean);
      const current = methodSelect.value;
      methodSelect.replaceChildren(
        ...wanted.map((m) => {
          const o = document.createElement("option");
          o.value = m;
          o.textContent = known[m] || m;
          return o;
        })
      );
      if (wanted.includes(current)) methodSelect.value = current;
      for (const el of form.querySelectorAll("[data-predicted-label]")) {
        el.textContent = option.dataset.predicted;
      }
      for (const o of targetSelect.options) o.disabled = o.value === option.dataset.predicted;
    };
    mvSelect.addEventListener("change", sync);
    sync();
  }

  function say(text, done, total) {
    jobLine.hidden = false;
    statusText.textContent = text;
    if (total !== undefined) {
      bar.max = Math.max(1, total);
      bar.value = done || 0;
    }
  }

  function target() {
    return otherRadio.checked ? targetSelect.value : null;
  }

  async function follow(job) {
    for (;;) {
      const total = job.total || 0;
      if (job.status === "succeeded") {
        say(`Done: ${job.done} of ${total} map${total === 1 ? "" : "s"} computed.`, total, total);
        return true;
      }
      if (job.status === "failed") {
        say(`The job failed: ${job.error || "no reason given"}.`, job.done, total);
        return false;
      }
      const where = job.status === "queued" ? "Queued" : "Computing";
      say(`${where}: ${job.done} of ${total} (job ${job.id})…`, job.done, total);
      await new Promise((resolve) => window.setTimeout(resolve, POLL_MS));
      const res = await api("GET", job.url);
      if (res.status !== 200 || !res.data) {
        say(`Could not read the job's progress (${res.status}); reload the page later.`);
        return false;
      }
      job = res.data;
    }
  }

  /* Cell page: the thumbnails of this page, fetched again with the computed maps chosen
   * (?method=&target=) and swapped in; the URL follows, so a reload shows the same. */
  async function refreshThumbnails(method, targetClass) {
    const url = new URL(window.location.href);
    url.searchParams.set("method", method);
    if (targetClass) url.searchParams.set("target", targetClass);
    else url.searchParams.delete("target");
    url.hash = "";
    const res = await fetch(url, { credentials: "same-origin" });
    if (!res.ok) throw new Error(`the page answered ${res.status}`);
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    const fresh = doc.querySelector("[data-thumbs]");
    const current = document.querySelector("[data-thumbs]");
    if (fresh && current) current.replaceWith(fresh);
    const note = doc.querySelector("#cell > p.muted");
    const oldNote = document.querySelector("#cell > p.muted");
    if (note && oldNote) oldNote.replaceWith(note);
    const pager = doc.querySelector("nav.pager");
    const oldPager = document.querySelector("nav.pager");
    if (pager && oldPager) oldPager.replaceWith(pager);
    window.history.replaceState(null, "", url.pathname + url.search + "#cell");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const method = methodSelect.value;
    const targetClass = target();
    button.disabled = true;
    try {
      if (form.dataset.mode === "cell") {
        const ids = JSON.parse(document.getElementById("cell-instance-ids").textContent);
        const body = { method, instance_ids: ids };
        if (targetClass) body.target = targetClass;
        say("Queueing…");
        const res = await api("POST", form.dataset.explainUrl, body);
        if (res.status !== 202) {
          say(errorText(res.data, res.status));
          return;
        }
        if (await follow(res.data)) {
          await refreshThumbnails(method, targetClass);
          say(statusText.textContent + " Thumbnails updated.");
        }
      } else {
        const option = mvSelect.selectedOptions[0];
        const body = { instance: Number(form.dataset.instance), method };
        if (targetClass) body.target = targetClass;
        say("Asking…");
        let res = await api("POST", option.dataset.explanationsUrl, body);
        if (res.status === 202) {
          if (!(await follow(res.data))) return;
          res = await api("POST", option.dataset.explanationsUrl, body); // now 200: the map
        }
        if (res.status !== 200 || !res.data) {
          say(errorText(res.data, res.status));
          return;
        }
        // Show the new map over the image: the page again, with this overlay chosen.
        const url = new URL(window.location.href);
        url.searchParams.set("overlay", res.data.id);
        say("Done; showing the map.");
        window.location.assign(url.toString());
      }
    } catch (err) {
      say(`Something went wrong: ${err.message}. Reload the page and try again.`);
    } finally {
      button.disabled = false;
    }
  });
})();
