// The batchrock console: plain JavaScript, no libraries. Every value from the server is put
// into the page as text (textContent, attributes), never as markup.
"use strict";

(function () {
  const STATUSES = ["Submitted", "Validating", "Scheduled", "InProgress", "Completed",
    "PartiallyCompleted", "Failed", "Stopping", "Stopped", "Expired"];
  const FINAL = new Set(["Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"]);
  const STOPPABLE = new Set(["Submitted", "Validating", "Scheduled", "InProgress"]);
  const POLL_MS = 1000; // live updates: one poll a second at most

  let session = null;
  let view = null; // {refresh: async fn, final: bool}
  let polling = false;
  const main = document.getElementById("main");

  // --- small helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "onclick" || key === "onsubmit" || key === "onchange" || key === "oninput") {
        node.addEventListener(key.slice(2), value);
      } else if (key === "text") {
        node.textContent = String(value);
      } else {
        node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(...nodes) {
    main.replaceChildren(...nodes);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && session && session.csrf) {
      init.headers["X-Batchrock-Csrf"] = session.csrf;
    }
    const response = await fetch("/console/api/" + path, init);
    let data = {};
    try {
      data = await response.json();
    } catch (e) {
      data = { message: "The server's answer could not be read (" + response.status + ")." };
    }
    if (!response.ok) {
      if (response.status === 401 && path !== "session") {
        session = null;
        route();
      }
      throw new ApiError(response.status, data.code || "", data.message || "Request failed.");
    }
    return data;
  }

  function jobId(arn) {
    return String(arn).split("/").pop();
  }

  function statusBadge(status) {
    return el("span", { class: "status status-" + status, "data-status": status }, status);
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }

  function fmtNumber(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString();
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "—";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function fmtBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  function errorBox(error) {
    return el("p", { class: "error", role: "alert" }, error.message || String(error));
  }

  // --- session -------------------------------------------------------------------------

  async function loadSession() {
    session = await api("GET", "session");
    const scope = document.getElementById("scope");
    const out = document.getElementById("sign-out");
    if (!session.signedIn) {
      scope.hidden = true;
      scope.replaceChildren();
      out.hidden = true;
      return;
    }
    // Jobs are per account and Region: the Region can be switched (and, in open mode, where
    // any caller may act as any account, the account too).
    const region = el("input", { id: "scope-region", value: session.region, size: 14, "aria-label": "Region" });
    const account = session.mode === "open"
      ? el("input", { id: "scope-account", value: session.account, size: 13, "aria-label": "Account" })
      : el("span", { id: "scope-account" }, session.account);
    scope.replaceChildren(el("span", {}, "Account "), account, el("span", {}, " Region "), region,
      el("button", { type: "submit", id: "scope-switch" }, "Switch"));
    scope.onsubmit = async (event) => {
      event.preventDefault();
      const body = { region: region.value.trim() };
      if (session.mode === "open") body.account = account.value.trim();
      try {
        await api("POST", "session/scope", body);
        await loadSession();
        route();
      } catch (e) {
        main.querySelectorAll(".scope-error").forEach((node) => node.remove());
        const box = errorBox(e);
        box.classList.add("scope-error");
        main.prepend(box);
      }
    };
    scope.hidden = false;
    out.hidden = session.mode === "open";
  }

  function signInView() {
    const message = el("div");
    const keyId = el("input", { id: "access-key-id", name: "accessKeyId", autocomplete: "username" });
    const secret = el("input", { id: "secret-access-key", name: "secretAccessKey", type: "password", autocomplete: "current-password" });
    const apiKey = el("input", { id: "api-key", name: "apiKey", type: "password", autocomplete: "off" });
    const form = el("form", {
      class: "card narrow", id: "sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        message.replaceChildren();
        try {
          await api("POST", "session", {
            accessKeyId: keyId.value, secretAccessKey: secret.value, apiKey: apiKey.value,
          });
          await loadSession();
          route();
        } catch (e) {
          message.replaceChildren(errorBox(e));
        }
      },
    },
      el("h1", {}, "Sign in"),
      el("p", { class: "muted" }, "With an access key of the server's credentials file, or a Bedrock API key."),
      el("label", { for: "access-key-id" }, "Access key ID"), keyId,
      el("label", { for: "secret-access-key" }, "Secret access key"), secret,
      el("p", { class: "or" }, "or"),
      el("label", { for: "api-key" }, "API key"), apiKey,
      message,
      el("button", { type: "submit", class: "primary" }, "Sign in"));
    show(form);
    view = null;
  }

  // --- job list ------------------------------------------------------------------------

  const listState = { statusEquals: "", nameContains: "", after: "", before: "", sortOrder: "Descending" };

  function listView() {
    const statusSelect = el("select", { id: "filter-status" },
      el("option", { value: "" }, "Any status"),
      STATUSES.map((s) => el("option", { value: s, selected: listState.statusEquals === s }, s)));
    const name = el("input", { id: "filter-name", type: "search", placeholder: "Name contains", value: listState.nameContains });
    const after = el("input", { id: "filter-after", type: "datetime-local", value: listState.after });
    const before = el("input", { id: "filter-before", type: "datetime-local", value: listState.before });
    const sort = el("select", { id: "filter-sort" },
      el("option", { value: "Descending", selected: listState.sortOrder === "Descending" }, "Newest first"),
      el("option", { value: "Ascending", selected: listState.sortOrder === "Ascending" }, "Oldest first"));
    const body = el("tbody");
    const message = el("div");
    const more = el("button", { type: "button", id: "load-more", hidden: true }, "Load more");
    let pages = 1;
    let nextToken = null;
    let latest = 0; // only the newest request's answer is shown (filters may change meanwhile)
    const me = { refresh, final: false };

    function params(token, limit) {
      const q = new URLSearchParams();
      if (listState.statusEquals) q.set("statusEquals", listState.statusEquals);
      if (listState.nameContains) q.set("nameContains", listState.nameContains);
      if (listState.after) q.set("submitTimeAfter", new Date(listState.after).toISOString());
      if (listState.before) q.set("submitTimeBefore", new Date(listState.before).toISOString());
      q.set("sortOrder", listState.sortOrder);
      q.set("maxResults", String(limit));
      if (token) q.set("nextToken", token);
      return q.toString();
    }

    function row(job) {
      const id = jobId(job.jobArn);
      const total = job.totalRecordCount || 0;
      const done = job.processedRecordCount || 0;
      return el("tr", { "data-job": id },
        el("td", {}, el("a", { href: "#/job/" + encodeURIComponent(id), class: "job-link" }, job.jobName)),
        el("td", {}, statusBadge(job.status)),
        el("td", { class: "mono" }, job.modelId),
        el("td", {}, fmtTime(job.submitTime)),
        el("td", { class: "num records" }, total ? fmtNumber(done) + " / " + fmtNumber(total) : "—"));
    }

    async function refresh() {
      // Live status: the pages shown so far, again.
      const mine = ++latest;
      try {
        const data = await api("GET", "jobs?" + params(null, Math.min(1000, 50 * pages)));
        if (mine !== latest || view !== me) return;
        const jobs = data.invocationJobSummaries || [];
        body.replaceChildren(...jobs.map(row));
        if (!jobs.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted empty" }, "No jobs match.")));
        nextToken = data.nextToken || null;
        more.hidden = !nextToken;
        message.replaceChildren();
      } catch (e) {
        if (mine === latest) message.replaceChildren(errorBox(e));
      }
    }

    more.addEventListener("click", () => { pages += 1; refresh(); });

    const filters = el("form", {
      class: "filters", id: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        listState.statusEquals = statusSelect.value;
        listState.nameContains = name.value.trim();
        listState.after = after.value;
        listState.before = before.value;
        listState.sortOrder = sort.value;
        pages = 1;
        refresh();
      },
    },
      el("label", {}, "Status", statusSelect),
      el("label", {}, "Name", name),
      el("label", {}, "Submitted after", after),
      el("label", {}, "Submitted before", before),
      el("label", {}, "Sort", sort),
      el("button", { type: "submit", id: "apply-filters" }, "Apply"));
    for (const input of [statusSelect, sort]) {
      input.addEventListener("change", () => filters.requestSubmit());
    }

    show(
      el("div", { class: "title-row" },
        el("h1", {}, "Batch inference jobs"),
        el("a", { href: "#/new", class: "button primary", id: "create-job" }, "Create job")),
      filters, message,
      el("table", { class: "jobs", id: "jobs" },
        el("thead", {}, el("tr", {},
          el("th", {}, "Name"), el("th", {}, "Status"), el("th", {}, "Model"),
          el("th", {}, "Submitted"), el("th", { class: "num" }, "Records"))),
        body),
      more);
    view = me;
    return refresh();
  }

  // --- one job -------------------------------------------------------------------------

  function jobView(id) {
    const title = el("h1", {}, id);
    const status = el("span");
    const stop = el("button", { type: "button", id: "stop-job", class: "danger", hidden: true }, "Stop job");
    const message = el("div");
    const bar = el("div", { class: "bar-fill", id: "progress-fill" });
    const barLabel = el("span", { id: "progress-label" });
    const counters = {};
    const counterBox = el("div", { class: "counters" },
      [["total", "Total"], ["processed", "Processed"], ["success", "Succeeded"], ["error", "Failed"],
        ["rate", "Records / s"], ["eta", "Time left"]].map(([key, label]) => {
        counters[key] = el("strong", { id: "counter-" + key }, "—");
        return el("div", { class: "counter" }, el("span", {}, label), counters[key]);
      }));
    const settings = el("dl", { class: "settings", id: "settings" });
    const tags = el("div", { id: "tags" });
    const timeline = el("ol", { class: "timeline", id: "timeline" });
    const files = el("tbody");
    const manifest = el("pre", { id: "manifest", class: "mono" }, "—");
    const errorsBody = el("tbody");
    const errorsMessage = el("div");
    const errorDetail = el("div", { id: "error-detail" });
    const errorsNext = el("button", { type: "button", id: "errors-next", hidden: true }, "Next page");
    const errorsFirst = el("button", { type: "button", id: "errors-first", hidden: true }, "First page");
    let cursor = null;
    let nextCursor = null;
    let errorsShown = -1;
    let current = null;
    const me = { refresh, final: false }; // this page's poll state (another page may follow)

    let errorsAsked = 0; // only the newest page asked for is shown
    async function loadErrors() {
      const mine = ++errorsAsked;
      try {
        const data = await api("GET", "jobs/" + encodeURIComponent(id) + "/errors" + (cursor ? "?cursor=" + encodeURIComponent(cursor) : ""));
        if (mine !== errorsAsked) return;
        errorsBody.replaceChildren(...data.records.map((r) => el("tr", {
          class: "error-record", tabindex: 0,
          onclick: () => {
            errorDetail.replaceChildren(el("div", { class: "card detail" },
              el("h3", {}, "Record " + (r.recordId || "(no id)")),
              el("dl", { class: "settings" },
                el("dt", {}, "File"), el("dd", { class: "mono" }, r.file + ", line " + r.line),
                el("dt", {}, "errorCode"), el("dd", { class: "mono", id: "detail-code" }, String(r.errorCode)),
                el("dt", {}, "errorMessage"), el("dd", { id: "detail-message" }, r.errorMessage)),
              el("h4", {}, "modelInput"),
              el("pre", { class: "mono" }, r.modelInput)));
          },
        },
          el("td", { class: "mono" }, r.recordId || "—"),
          el("td", { class: "num" }, String(r.errorCode)),
          el("td", {}, r.errorMessage))));
        if (!data.records.length) {
          // A running job's records reach its .out file when that input file is done.
          const pending = current && !FINAL.has(current.job.status) && current.job.errorRecordCount > 0;
          errorsBody.append(el("tr", {}, el("td", { colspan: 3, class: "muted empty" },
            pending ? "Error records appear here as each input file finishes." : "No error records.")));
        }
        nextCursor = data.next;
        errorsNext.hidden = !nextCursor;
        errorsFirst.hidden = !cursor;
        errorsMessage.replaceChildren();
      } catch (e) {
        errorsMessage.replaceChildren(errorBox(e));
      }
    }
    errorsNext.addEventListener("click", () => { cursor = nextCursor; loadErrors(); });
    errorsFirst.addEventListener("click", () => { cursor = null; loadErrors(); });

    stop.addEventListener("click", async () => {
      if (!current || !window.confirm("Stop job " + current.job.jobName + "?")) return;
      stop.disabled = true;
      try {
        await api("POST", "jobs/" + encodeURIComponent(id) + "/stop", {});
        await refresh();
      } catch (e) {
        message.replaceChildren(errorBox(e));
      } finally {
        stop.disabled = false;
      }
    });

    function setting(label, value, attrs) {
      return [el("dt", {}, label), el("dd", attrs || {}, value === undefined || value === null ? "—" : String(value))];
    }

    function render(data) {
      current = data;
      const job = data.job;
      title.textContent = job.jobName;
      status.replaceChildren(statusBadge(job.status));
      stop.hidden = !STOPPABLE.has(job.status);
      message.replaceChildren(job.message ? el("p", { class: "job-message" }, job.message) : "");
      const p = data.progress;
      const pct = p.fraction === null ? 0 : Math.round(p.fraction * 1000) / 10;
      bar.style.width = pct + "%";
      barLabel.textContent = p.fraction === null ? "Counting records…" : pct + "%";
      counters.total.textContent = fmtNumber(job.totalRecordCount);
      counters.processed.textContent = fmtNumber(job.processedRecordCount);
      counters.success.textContent = fmtNumber(job.successRecordCount);
      counters.error.textContent = fmtNumber(job.errorRecordCount);
      counters.rate.textContent = p.recordsPerSecond === null ? "—" : p.recordsPerSecond.toFixed(1);
      counters.eta.textContent = fmtSeconds(p.secondsLeft);
      settings.replaceChildren(
        ...setting("Job ARN", job.jobArn, { class: "mono" }),
        ...setting("Model", job.modelId, { class: "mono", id: "setting-model" }),
        ...setting("Input", job.inputDataConfig.s3InputDataConfig.s3Uri, { class: "mono", id: "setting-input" }),
        ...setting("Output", job.outputDataConfig.s3OutputDataConfig.s3Uri, { class: "mono", id: "setting-output" }),
        ...setting("Service role", job.roleArn, { class: "mono" }),
        ...setting("Invocation type", job.modelInvocationType),
        ...setting("Timeout", job.timeoutDurationInHours + " hours", { id: "setting-timeout" }),
        ...setting("Expires", fmtTime(job.jobExpirationTime)),
        ...setting("Submitted", fmtTime(job.submitTime)),
        ...setting("Last modified", fmtTime(job.lastModifiedTime)),
        ...setting("Ended", job.endTime ? fmtTime(job.endTime) : null));
      if (data.tags === null) {
        tags.replaceChildren(el("p", { class: "muted" }, "This key may not read tags."));
      } else if (!data.tags.length) {
        tags.replaceChildren(el("p", { class: "muted" }, "No tags."));
      } else {
        tags.replaceChildren(el("ul", { class: "tags" }, data.tags.map((t) => el("li", {}, el("span", { class: "mono" }, t.key), " = ", el("span", { class: "mono" }, t.value)))));
      }
      timeline.replaceChildren(...data.events.map((e) => el("li", { "data-status": e.to },
        statusBadge(e.to), " ", el("time", { datetime: e.at }, fmtTime(e.at)),
        e.message ? el("div", { class: "muted" }, e.message) : null)));
      const base = "/console/files/" + encodeURIComponent(id) + "/";
      files.replaceChildren(...data.files.map((f) => {
        const href = base + f.name.split("/").map(encodeURIComponent).join("/");
        return el("tr", { "data-file": f.name },
          el("td", { class: "mono" }, f.name),
          el("td", { class: "num" }, fmtBytes(f.size)),
          el("td", {},
            el("a", { href, target: "_blank", rel: "noopener", class: "view" }, "View"), " · ",
            el("a", { href: href + "?download=1", download: f.name.split("/").pop(), class: "download" }, "Download")));
      }));
      if (!data.files.length) files.append(el("tr", {}, el("td", { colspan: 3, class: "muted empty" }, "No output yet.")));
      manifest.textContent = data.manifest ? JSON.stringify(data.manifest, null, 2) : "Not written yet.";
      const errors = job.errorRecordCount || 0;
      if (errors !== errorsShown && (cursor === null)) {
        errorsShown = errors;
        loadErrors();
      }
    }

    async function refresh() {
      try {
        const data = await api("GET", "jobs/" + encodeURIComponent(id));
        if (view !== me) return; // the user went to another page meanwhile
        render(data);
        me.final = FINAL.has(data.job.status);
      } catch (e) {
        message.replaceChildren(errorBox(e));
        if (e.status === 404) me.final = true;
      }
    }

    show(
      el("p", {}, el("a", { href: "#/" }, "← All jobs")),
      el("div", { class: "title-row" }, el("div", {}, title, " ", status), stop),
      message,
      el("section", { class: "card" },
        el("div", { class: "bar", role: "progressbar" }, bar), barLabel, counterBox),
      el("div", { class: "columns" },
        el("section", { class: "card" }, el("h2", {}, "Settings"), settings, el("h3", {}, "Tags"), tags),
        el("section", { class: "card" }, el("h2", {}, "Timeline"), timeline)),
      el("section", { class: "card" }, el("h2", {}, "Output files"),
        el("table", { id: "files" }, el("thead", {}, el("tr", {}, el("th", {}, "File"), el("th", { class: "num" }, "Size"), el("th", {}, ""))), files),
        el("h3", {}, "Manifest"), manifest),
      el("section", { class: "card" }, el("h2", {}, "Error records"), errorsMessage,
        el("table", { id: "errors" }, el("thead", {}, el("tr", {}, el("th", {}, "recordId"), el("th", { class: "num" }, "errorCode"), el("th", {}, "errorMessage"))), errorsBody),
        el("div", { class: "pager" }, errorsFirst, errorsNext), errorDetail));
    view = me;
    return refresh();
  }

  // --- create a job --------------------------------------------------------------------

  function newJobView() {
    const message = el("div");
    const name = el("input", { id: "job-name", required: true, maxlength: 63, value: "console-" + new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "") });
    const models = el("datalist", { id: "model-list" });
    const model = el("input", { id: "model-id", required: true, list: "model-list", placeholder: "anthropic.claude-3-haiku-20240307-v1:0" });
    const input = el("input", { id: "input-uri", required: true, placeholder: "s3://bucket/input/" });
    const output = el("input", { id: "output-uri", required: true, placeholder: "s3://bucket/output/" });
    const timeout = el("input", { id: "timeout-hours", type: "number", min: 24, max: 168, value: 24 });
    const role = el("input", { id: "role-arn", required: true, value: "arn:aws:iam::" + session.account + ":role/batchrock-console" });
    const browser = el("div", { class: "browser", id: "browser" });
    const token = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()));

    async function browse(uri) {
      try {
        const data = await api("GET", "browse?uri=" + encodeURIComponent(uri));
        if (data.buckets) {
          browser.replaceChildren(el("p", { class: "muted" }, "Buckets"),
            el("ul", {}, data.buckets.map((b) => el("li", {}, el("a", { href: "#", class: "folder", onclick: (ev) => { ev.preventDefault(); browse("s3://" + b + "/"); } }, b + "/")))));
          if (!data.buckets.length) browser.append(el("p", { class: "muted" }, "No buckets here: type an S3 URI."));
          return;
        }
        const here = "s3://" + data.bucket + "/" + data.prefix;
        const up = data.prefix ? "s3://" + data.bucket + "/" + data.prefix.replace(/[^/]+\/$/, "") : "s3://";
        browser.replaceChildren(
          el("div", { class: "browser-head" },
            el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); browse(up); } }, "↑ Up"), " ",
            el("span", { class: "mono" }, here), " ",
            el("button", { type: "button", class: "use-prefix", onclick: () => { input.value = here; } }, "Use this prefix")),
          el("ul", {},
            data.folders.map((f) => el("li", {}, el("a", { href: "#", class: "folder", onclick: (ev) => { ev.preventDefault(); browse("s3://" + data.bucket + "/" + f); } }, f.slice(data.prefix.length)))),
            data.files.map((f) => el("li", {}, el("a", { href: "#", class: "file", onclick: (ev) => { ev.preventDefault(); input.value = "s3://" + data.bucket + "/" + f.key; } }, f.key.slice(data.prefix.length)), " ", el("span", { class: "muted" }, fmtBytes(f.size))))),
          data.truncated ? el("p", { class: "muted" }, "Only the first entries are shown.") : null);
      } catch (e) {
        browser.replaceChildren(errorBox(e));
      }
    }

    const form = el("form", {
      class: "card", id: "create-form",
      onsubmit: async (event) => {
        event.preventDefault();
        message.replaceChildren();
        const body = {
          jobName: name.value.trim(),
          modelId: model.value.trim(),
          roleArn: role.value.trim(),
          clientRequestToken: token,
          inputDataConfig: { s3InputDataConfig: { s3Uri: input.value.trim() } },
          outputDataConfig: { s3OutputDataConfig: { s3Uri: output.value.trim() } },
        };
        if (timeout.value) body.timeoutDurationInHours = Number(timeout.value);
        try {
          const created = await api("POST", "jobs", body);
          location.hash = "#/job/" + encodeURIComponent(jobId(created.jobArn));
        } catch (e) {
          message.replaceChildren(errorBox(e));
        }
      },
    },
      el("h1", {}, "Create batch inference job"),
      el("label", { for: "job-name" }, "Job name"), name,
      el("label", { for: "model-id" }, "Model"), model, models,
      el("label", { for: "input-uri" }, "Input (S3 URI of a .jsonl file or a prefix)"), input,
      el("button", { type: "button", id: "browse", onclick: () => browse(input.value.trim() || "s3://") }, "Browse…"),
      browser,
      el("label", { for: "output-uri" }, "Output (S3 URI)"), output,
      el("label", { for: "timeout-hours" }, "Timeout (hours, 24–168)"), timeout,
      el("label", { for: "role-arn" }, "Service role ARN"), role,
      message,
      el("button", { type: "submit", class: "primary", id: "submit-job" }, "Create job"));
    show(form);
    view = null;
    api("GET", "models").then((data) => {
      models.replaceChildren(...data.models.map((m) => el("option", { value: m.id }, m.name)));
    }).catch((e) => message.replaceChildren(errorBox(e)));
  }

  // --- routing and polling -------------------------------------------------------------

  function route() {
    if (!session || !session.signedIn) return signInView();
    const hash = location.hash || "#/";
    const job = hash.match(/^#\/job\/([a-z0-9]{12})$/);
    if (job) return jobView(job[1]);
    if (hash === "#/new") return newJobView();
    return listView();
  }

  async function poll() {
    if (!polling && view && !view.final && document.visibilityState === "visible") {
      polling = true;
      try {
        await view.refresh();
      } finally {
        polling = false;
      }
    }
  }

  window.addEventListener("hashchange", route);
  document.getElementById("sign-out").addEventListener("click", async () => {
    try {
      await api("POST", "session/end", {});
    } finally {
      await loadSession();
      route();
    }
  });

  loadSession().then(route).catch((e) => show(errorBox(e)));
  setInterval(poll, POLL_MS);
})();
