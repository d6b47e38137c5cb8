/* Scientist pages: live job progress, the round form's part builder and live sampler
 * preview, live round progress. Plain JS, no build step. Every page works without it:
 * the forms post to the server, the preview has a submit button, and a reload shows
 * fresh progress. */
(function () {
  "use strict";

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  /* Same wording as frontend.scientist_views._duration. */
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "not known yet";
    let minutes = Math.round(seconds / 60);
    if (minutes < 1) return "under a minute";
    if (minutes < 60) return "about " + minutes + " min";
    const hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 48) return "about " + hours + " h " + minutes + " min";
    return "about " + Math.round(hours / 24) + " days";
  }

  async function getJSON(url) {
    const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!res.ok) throw new Error(url + " answered " + res.status);
    return res.json();
  }

  /* After a failed submit, move focus to the summary so screen readers hear it. */
  const alertBox = document.querySelector("[data-autofocus]");
  if (alertBox) alertBox.focus();

  /* --- Jobs: poll every 2 s while one is queued or running ----------------------------- */
  const jobsTable = document.querySelector("table[data-jobs-url]");
  if (jobsTable) {
    const notice = document.querySelector("[data-jobs-notice]");
    const running = () =>
      Array.from(jobsTable.querySelectorAll("tr[data-job-id]")).some(
        (row) => row.dataset.status === "queued" || row.dataset.status === "running"
      );
    let finished = 0;
    const tick = async () => {
      try {
        const body = await getJSON(jobsTable.dataset.jobsUrl);
        for (const job of body.results || body) {
          const row = jobsTable.querySelector('tr[data-job-id="' + job.id + '"]');
          if (!row) continue;
          const was = row.dataset.status;
          row.dataset.status = job.status;
          row.querySelector('[data-field="status"]').textContent =
            job.status + (job.error ? ": " + job.error : "");
          const bar = row.querySelector("progress");
          bar.max = job.total || 1;
          bar.value = job.done;
          row.querySelector('[data-field="count"]').textContent = job.done + "/" + job.total;
          row.querySelector('[data-field="eta"]').textContent =
            job.eta_seconds === null ? "–" : duration(job.eta_seconds);
          if (was !== job.status && (job.status === "succeeded" || job.status === "failed")) {
            finished += 1;
          }
        }
        if (finished && notice) {
          notice.textContent = "";
          notice.append(finished + " job" + (finished > 1 ? "s" : "") + " finished. ");
          const link = document.createElement("a");
          link.href = window.location.pathname;
          link.textContent = "Reload to see the new data";
          notice.append(link);
        }
      } catch (err) {
        console.warn(err);
      }
      if (running()) window.setTimeout(tick, 2000);
    };
    if (running()) window.setTimeout(tick, 2000);
  }

  /* --- Model registration: architecture only for kind=architecture ---------------------- */
  const kindSelect = document.getElementById("id_register-kind");
  const archInput = document.getElementById("id_register-architecture");
  if (kindSelect && archInput) {
    const archField = archInput.closest("div");
    const sync = () => {
      archField.hidden = kindSelect.value !== "architecture";
    };
    kindSelect.addEventListener("change", sync);
    sync();
    const list = document.getElementById("architectures");
    archInput.addEventListener(
      "focus",
      async () => {
        if (!list || list.options.length) return;
        try {
          for (const name of await getJSON(list.dataset.url)) {
            const option = document.createElement("option");
            option.value = name;
            list.append(option);
          }
        } catch (err) {
          console.warn(err);
        }
      },
      { once: true }
    );
  }

  /* --- Round creation: part builder and live preview ----------------------------------- */
  const roundForm = document.getElementById("round-form");
  if (roundForm) {
    const list = roundForm.querySelector("[data-parts]");
    const template = roundForm.querySelector("template[data-part-template]");
    const totalForms = roundForm.querySelector('input[name="part-TOTAL_FORMS"]');
    const maxForms = Number(roundForm.querySelector('input[name="part-MAX_NUM_FORMS"]').value);
    const addButton = roundForm.querySelector("[data-add-part]");
    const totalOut = roundForm.querySelector("[data-preview-total]");
    const errorOut = roundForm.querySelector("[data-preview-error]");
    const visibleRows = () => Array.from(list.querySelectorAll("[data-part-row]")).filter((r) => !r.hidden);
    const kindOf = (row) => row.querySelector('select[name$="-kind"]').value;

    const syncKind = (row) => {
      const kind = kindOf(row);
      row.querySelectorAll("[data-kinds]").forEach((div) => {
        div.hidden = !div.dataset.kinds.split(" ").includes(kind);
      });
    };
    const renumber = () => {
      visibleRows().forEach((row, i) => {
        row.querySelector("[data-part-legend]").textContent = "Part " + (i + 1);
        const copy = row.querySelector("[data-part-legend-copy]");
        if (copy) copy.textContent = " " + (i + 1);
      });
      addButton.disabled = Number(totalForms.value) >= maxForms;
    };

    let timer = null;
    let sequence = 0;
    const schedulePreview = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(preview, 350);
    };

    const wire = (row) => {
      row.querySelector('select[name$="-kind"]').addEventListener("change", () => syncKind(row));
      row.querySelector("[data-remove-part]").addEventListener("click", () => {
        // Hidden with an empty kind rather than removed: the formset's indices stay valid.
        row.querySelector('select[name$="-kind"]').value = "";
        row.hidden = true;
        renumber();
        addButton.focus();
        schedulePreview();
      });
      syncKind(row);
    };

    list.querySelectorAll("[data-part-row]").forEach(wire);
    addButton.hidden = false;
    addButton.addEventListener("click", () => {
      const index = Number(totalForms.value);
      if (index >= maxForms) return;
      list.insertAdjacentHTML("beforeend", template.innerHTML.replaceAll("__prefix__", String(index)));
      totalForms.value = String(index + 1);
      const row = list.lastElementChild;
      wire(row);
      renumber();
      row.querySelector("select").focus();
    });
    renumber();

    const strategy = () => {
      const parts = [];
      const rows = [];
      for (const row of visibleRows()) {
        const kind = kindOf(row);
        if (!kind) continue;
        const part = { kind: kind };
        row.querySelectorAll("[data-kinds]").forEach((div) => {
          if (!div.dataset.kinds.split(" ").includes(kind)) return;
          const el = div.querySelector("input, select");
          const key = el.name.split("-").pop();
          const value = el.value.trim();
          if (value === "") return;
          if (key === "by") part[key] = value;
          else if (key === "ids") part[key] = value.split(/[\s,]+/).filter(Boolean).map(Number);
          else part[key] = Number(value);
        });
        parts.push(part);
        rows.push(row);
      }
      const el = roundForm.elements;
      const seed = el.seed.value.trim();
      const limit = el.limit.value.trim();
      return {
        rows: rows,
        sampling: {
          split: el.split.value || null,
          seed: seed === "" ? 0 : Number(seed),
          limit: limit === "" ? null : Number(limit),
          parts: parts,
        },
      };
    };

    async function preview() {
      const mine = ++sequence;
      const { rows, sampling } = strategy();
      list.querySelectorAll("[data-part-output]").forEach((out) => {
        out.textContent = "";
        out.classList.remove("error");
      });
      errorOut.textContent = "";
      if (!sampling.parts.length) {
        totalOut.textContent = "Choose at least one part.";
        return;
      }
      totalOut.textContent = "Counting…";
      let res;
      let body;
      try {
        res = await fetch(roundForm.dataset.previewUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
          body: JSON.stringify({ model_version: Number(roundForm.elements.model_version.value), sampling: sampling }),
        });
        body = await res.json();
      } catch (err) {
        if (mine === sequence) totalOut.textContent = "The preview is unavailable; use the Preview counts button.";
        return;
      }
      if (mine !== sequence) return; // a newer preview is on its way
      if (res.ok) {
        Object.keys(body.parts).forEach((name, k) => {
          const out = rows[k] && rows[k].querySelector("[data-part-output]");
          if (out) out.textContent = "Chooses " + body.parts[name] + ", adds " + body.new[name];
        });
        totalOut.textContent = "";
        totalOut.append("The round would hold ");
        const strong = document.createElement("strong");
        strong.textContent = String(body.total);
        totalOut.append(strong, " instances.");
        return;
      }
      totalOut.textContent = "The preview found a problem.";
      for (const [field, messages] of Object.entries(body)) {
        const text = [].concat(messages).join(" ");
        const match = field.match(/^sampling\.parts\[(\d+)\](?:\.(\w+))?/);
        const row = match && rows[Number(match[1])];
        if (row) {
          const out = row.querySelector("[data-part-output]");
          out.textContent = (match[2] ? match[2] + ": " : "") + text;
          out.classList.add("error");
        } else {
          errorOut.textContent += field.replace(/^sampling\.?/, "") + " " + text + " ";
        }
      }
    }

    const samplingSet = roundForm.querySelector("#sampling");
    samplingSet.addEventListener("input", schedulePreview);
    samplingSet.addEventListener("change", schedulePreview);
    roundForm.elements.model_version.addEventListener("change", schedulePreview);
    schedulePreview();
  }

  /* --- Round progress: refresh the figures every 5 s while the round is open ------------ */
  const progressBox = document.querySelector("[data-progress-url]");
  if (progressBox && progressBox.dataset.progressLive === "1") {
    const tick = async () => {
      try {
        const p = await getJSON(progressBox.dataset.progressUrl);
        progressBox.querySelectorAll("[data-progress]").forEach((el) => {
          const key = el.dataset.progress;
          el.textContent = key === "eta" ? duration(p.eta_seconds) : String(p[key]);
        });
        const bar = progressBox.querySelector("[data-progress-bar]");
        bar.max = p.total || 1;
        bar.value = p.submitted;
      } catch (err) {
        console.warn(err);
      }
      window.setTimeout(tick, 5000);
    };
    window.setTimeout(tick, 5000);
  }

  /* --- Closing a round cannot be undone: ask first -------------------------------------- */
  document.querySelectorAll('button[name="action"][value="close"]').forEach((button) => {
    button.addEventListener("click", (event) => {
      if (!window.confirm("Close this round? Experts can no longer submit reviews to it.")) {
        event.preventDefault();
      }
    });
  });
})();
