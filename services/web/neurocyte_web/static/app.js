// The recordings page: Uppy sends files straight to S3 (multipart, URLs signed by this site
// for the lab's own prefix), then the manifest is asked for; the list refreshes itself.
"use strict";
(function () {
  const config = document.getElementById("config");
  const csrf = config.dataset.csrf;
  const maxBytes = Number(config.dataset.maxBytes);
  const check = document.getElementById("check");
  const KNOWN = [".raw.h5", ".bin", ".json", ".meta", ".h5", ".brw", ".nwb"];

  async function api(method, url, body) {
    const r = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || `the server answered ${r.status}`);
    return data;
  }

  const stem = (name) => name.split(".")[0];
  const suffix = (name) => KNOWN.find((s) => name.toLowerCase().endsWith(s));

  function size(bytes) { // 2.4 MB, 250 GB: what a file manager would say
    const units = ["bytes", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i += 1; }
    return `${bytes < 10 && i ? bytes.toFixed(1) : Math.round(bytes)} ${units[i]}`;
  }

  // What can be said before a byte is sent, in plain words.
  function problems(files) {
    const out = [];
    const names = new Set(files.map((f) => f.name));
    for (const f of files) {
      if (!suffix(f.name)) out.push(`${f.name}: not a recording format Neurocyte reads (.bin with .json or .meta, .raw.h5, .h5, .brw, .nwb).`);
      if (f.name.toLowerCase().endsWith(".bin") && !names.has(stem(f.name) + ".json") && !names.has(stem(f.name) + ".meta"))
        out.push(`${f.name} needs its companion: add ${stem(f.name)}.json (raw binary) or ${stem(f.name)}.meta (SpikeGLX).`);
    }
    const totals = {}; // per recording, as the files are grouped when sent
    for (const f of files) totals[stem(f.name)] = (totals[stem(f.name)] || 0) + f.size;
    for (const [name, total] of Object.entries(totals))
      if (total > maxBytes)
        out.push(`${name}: ${size(total)}, over your lab's limit of ${size(maxBytes)} per upload. Upload the recording in shorter files, or ask your administrator.`);
    return out;
  }

  function say(lines) {
    check.hidden = !lines.length;
    check.textContent = lines.join(" ");
  }

  // The bytes go up without a Content-Type (a typeless slice of the file, no copy): a presigned
  // part URL signs none, and LocalStack, unlike S3, counts one sent against the signature.
  const uppy = new Uppy.Uppy({
    autoProceed: false, // sizes are checked per recording by problems(), in our words
    onBeforeFileAdded: (file) => ({ ...file, data: file.data.slice(0, file.data.size, "") }),
  });
  uppy.use(Uppy.Dashboard, {
    inline: true, target: "#uploader", height: 320, proudlyDisplayPoweredByUppy: false,
    note: "A recording's files together: e.g. slice3.bin and slice3.json",
  });
  uppy.use(Uppy.GoldenRetriever); // an upload interrupted by a reload resumes from its last part
  // Said as soon as it can be: the files' problems, and the experiment's (its plate map is checked
  // by the site against the files dropped) whenever the files, the name or the map change.
  let finishing = false; // files leave the list once uploaded: not a change to check
  async function recheck() {
    if (finishing) return;
    const files = uppy.getFiles().map((f) => ({ name: f.name, size: f.size }));
    const lines = problems(files);
    try {
      if (files.length) await checkExperiment(files.map((f) => f.name));
    } catch (e) {
      lines.push(e.message);
    }
    say(lines);
  }
  uppy.on("files-added", recheck);
  uppy.on("file-removed", recheck);
  document.getElementById("plate-map").addEventListener("change", recheck);
  document.getElementById("experiment-name").addEventListener("change", recheck);

  // An experiment (optional): its name and plate map, checked by the site before a byte is sent;
  // every recording's manifest then carries them.
  let experiment = null;
  async function checkExperiment(names) {
    const map = document.getElementById("plate-map").files[0];
    const name = document.getElementById("experiment-name").value.trim();
    if (!map && !name) return null;
    if (!map || !name) throw new Error("An experiment needs both its name and its plate map.");
    const plateMap = await map.text();
    await api("POST", "/api/experiments/check", { name, plate_map: plateMap, files: names });
    return { name, plate_map: plateMap };
  }

  // Before uploading: refuse what cannot work, and give each recording (files sharing a stem) an id.
  uppy.addPreProcessor(async (ids) => {
    const files = ids.map((id) => uppy.getFile(id));
    const found = problems(files.map((f) => ({ name: f.name, size: f.size })));
    say(found);
    if (found.length) throw new Error(found.join(" "));
    try {
      experiment = await checkExperiment(files.map((f) => f.name));
    } catch (e) {
      say([e.message]);
      throw e;
    }
    const groups = {};
    for (const f of files) if (!f.meta.rid) (groups[stem(f.name)] = groups[stem(f.name)] || []).push(f);
    for (const [name, group] of Object.entries(groups)) {
      const started = await api("POST", "/api/uploads", { files: group.map((f) => ({ name: f.name, size: f.size })) });
      for (const f of group) uppy.setFileMeta(f.id, { rid: started.recording_id, recording: name });
    }
  });

  const base = (file) => `/api/uploads/${encodeURIComponent(file.meta.rid)}/multipart`;
  uppy.use(Uppy.AwsS3, {
    shouldUseMultipart: () => true,
    limit: 4, // parts in flight, as `neurocyte submit` (boto3: 4 threads of 16 MiB parts)
    getChunkSize: (file) => Math.max(16 * 1024 * 1024, Math.ceil(file.size / 10000)),
    createMultipartUpload: (file) => api("POST", base(file), { filename: file.name }),
    signPart: (file, { uploadId, key, partNumber, body }) =>
      api("GET", `${base(file)}/sign?` + new URLSearchParams({ uploadId, key, partNumber, size: body.size })),
    listParts: (file, { uploadId, key }) => api("GET", `${base(file)}/parts?` + new URLSearchParams({ uploadId, key })),
    completeMultipartUpload: (file, { uploadId, key, parts }) =>
      api("POST", `${base(file)}/complete?` + new URLSearchParams({ uploadId, key }), { parts }),
    abortMultipartUpload: (file, { uploadId, key }) =>
      api("POST", `${base(file)}/abort?` + new URLSearchParams({ uploadId, key })),
  });

  // The manifest last, once every file of a recording is whole in storage.
  uppy.on("complete", async (result) => {
    const byRecording = {};
    for (const f of uppy.getFiles()) (byRecording[f.meta.rid] = byRecording[f.meta.rid] || []).push(f);
    for (const [rid, files] of Object.entries(byRecording)) {
      if (!files.every((f) => f.progress && f.progress.uploadComplete)) continue;
      try {
        await api("POST", `/api/uploads/${encodeURIComponent(rid)}/manifest`,
          { name: files[0].meta.recording, files: files.map((f) => f.name), experiment });
        finishing = true;
        try { for (const f of files) uppy.removeFile(f.id); } finally { finishing = false; }
      } catch (e) {
        say([`${files[0].meta.recording}: ${e.message}`]);
      }
    }
    refresh();
  });

  // The list: stages as the pipeline writes them, refreshed without reloading the page.
  const tbody = document.querySelector("#recordings tbody");
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  function render(rows) {
    tbody.replaceChildren();
    if (!rows.length) {
      const tr = tbody.insertRow(); tr.className = "empty";
      const td = tr.insertCell(); td.colSpan = 3; td.textContent = "No recordings yet: drop one above.";
      return;
    }
    for (const r of rows) {
      const tr = tbody.insertRow(); tr.dataset.id = r.id;
      const a = document.createElement("a"); a.href = `/recordings/${encodeURIComponent(r.id)}`; a.textContent = r.name;
      tr.insertCell().append(a);
      const t = document.createElement("time"); t.dateTime = r.uploaded_at; t.textContent = when(r.uploaded_at);
      tr.insertCell().append(t);
      const s = tr.insertCell();
      s.className = "stage" + (r.failed ? " failed" : r.done ? " done" : "");
      s.textContent = r.stage + (r.detail && !r.done ? `: ${r.detail}` : "");
    }
  }
  async function refresh() {
    try { render((await api("GET", "/api/recordings")).recordings); } catch (e) { /* the next poll tries again */ }
  }
  setInterval(refresh, 3000);
})();
