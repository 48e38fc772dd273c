// Rating page of the ratgan visual Turing test. Everything this page knows comes from
// /r/<token>/state (progress and an opaque item id) and one PNG sprite sheet per scan.
"use strict";

(function () {
  const token = location.pathname.split("/")[2];
  const base = "/r/" + encodeURIComponent(token);
  const $ = (id) => document.getElementById(id);
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  const slider = $("slice");
  const submitButton = $("submit");
  const choiceButtons = Array.from(document.querySelectorAll(".choice"));

  let state = null;     // last /state answer
  let sheet = null;     // decoded sprite sheet of the current item
  let slice = 0;        // 0-based index of the slice on screen
  let choice = null;    // "real" | "synthetic" | null
  let busy = true;      // true while loading or submitting: input is ignored
  let smooth = true;
  let shownAt = 0;
  const NOT_SAVED = "Your last answer was NOT saved: that scan had already been answered " +
    "(in another tab or window). The answer given there counts; here is the next scan.";
  const ALREADY_SAVED = "Your last answer had already been saved (the same answer was sent " +
    "twice, or given in another tab); here is the next scan.";

  function setStatus(status) {
    document.body.dataset.status = status;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
  }

  function updateProgress() {
    const done = state.done, total = state.total;
    $("bar").style.width = total ? (100 * done / total).toFixed(1) + "%" : "0";
    $("progress-text").textContent = done + " of " + total + " rated";
    $("rater").textContent = "· " + state.rater;
  }

  function resizeCanvas() {
    const box = $("canvas-wrap").getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(box.width * ratio));
    canvas.height = Math.max(1, Math.round(box.height * ratio));
    draw();
  }

  function draw() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!sheet || !state || !state.item) return;
    const it = state.item;
    const col = slice % it.columns, row = Math.floor(slice / it.columns);
    const scale = Math.min(canvas.width / it.tile_width, canvas.height / it.tile_height);
    const w = it.tile_width * scale, h = it.tile_height * scale;
    ctx.imageSmoothingEnabled = smooth;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(sheet, col * it.tile_width, row * it.tile_height, it.tile_width, it.tile_height,
                  (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    $("slice-label").textContent = "slice " + (slice + 1) + " / " + it.n_slices;
    slider.value = String(slice + 1);
    document.body.dataset.slice = String(slice + 1);
  }

  function setSlice(index) {
    if (!state || !state.item) return;
    slice = Math.max(0, Math.min(state.item.n_slices - 1, index));
    draw();
  }

  function choose(answer) {
    if (busy) return;
    choice = answer;
    for (const b of choiceButtons) {
      const on = b.dataset.answer === answer;
      b.classList.toggle("selected", on);
      b.setAttribute("aria-checked", on ? "true" : "false");
    }
    submitButton.disabled = choice === null;
    document.body.dataset.choice = choice || "";
  }

  function resetChoice() {
    choice = null;
    for (const b of choiceButtons) {
      b.classList.remove("selected");
      b.setAttribute("aria-checked", "false");
    }
    submitButton.disabled = true;
    document.body.dataset.choice = "";
  }

  function finish() {
    $("study").hidden = true;
    $("done").hidden = false;
    $("done-count").textContent = String(state.total);
    document.body.dataset.item = "";
    setStatus("done");
  }

  // notice: a message to show once the next scan is on screen (e.g. an answer not saved).
  async function load(notice) {
    busy = true;
    setStatus("loading");
    resetChoice();
    let response;
    try {
      response = await fetch(base + "/state", { cache: "no-store", credentials: "omit" });
    } catch (err) {
      showError("The server cannot be reached. Your answers so far are saved; reload to continue.");
      setStatus("error");
      return;
    }
    if (!response.ok) {
      showError("This link is not valid.");
      setStatus("error");
      return;
    }
    state = await response.json();
    updateProgress();
    if (state.finished) {
      finish();
      if (notice) showError(notice);
      return;
    }
    $("item-title").textContent = "Scan " + (state.done + 1) + " of " + state.total;
    slider.min = "1";
    slider.max = String(state.item.n_slices);
    const image = new Image();
    image.decoding = "async";
    image.onload = () => {
      sheet = image;
      slice = Math.floor(state.item.n_slices / 2);
      resizeCanvas();
      shownAt = performance.now();
      busy = false;
      if (notice) {
        showError(notice);
      } else {
        clearError();
      }
      document.body.dataset.item = state.item.id;
      setStatus("ready");
    };
    image.onerror = () => {
      showError("The scan could not be loaded; reload the page to try again.");
      setStatus("error");
    };
    image.src = base + "/img/" + state.item.id;
  }

  async function submit() {
    if (busy || choice === null || !state || !state.item) return;
    busy = true;
    submitButton.disabled = true;
    setStatus("submitting");
    const body = JSON.stringify({
      item: state.item.id,
      answer: choice,
      elapsed_ms: Math.round(performance.now() - shownAt),
    });
    let response;
    try {
      response = await fetch(base + "/answer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "omit",
        body: body,
      });
    } catch (err) {
      busy = false;
      submitButton.disabled = false;
      setStatus("ready");
      showError("The answer could not be sent; check the connection and submit again.");
      return;
    }
    if (response.ok || response.status === 409) {
      // 409: this scan was already answered (another tab or a repeated request). Status
      // "already_saved": with this same answer, so it is stored; otherwise this answer was
      // not saved. Say which, then move on to the scan that is now current.
      let notice = null;
      if (!response.ok) {
        let reply = null;
        try {
          reply = await response.json();
        } catch (err) {
          reply = null;
        }
        notice = reply && reply.status === "already_saved" ? ALREADY_SAVED : NOT_SAVED;
      }
      sheet = null;
      draw();
      load(notice);
    } else {
      busy = false;
      submitButton.disabled = false;
      setStatus("ready");
      showError("The server refused the answer (" + response.status + "); reload the page.");
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const step = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 5, PageDown: -5 };
    if (key in step) {
      setSlice(slice + step[key]);
    } else if (key === "Home") {
      setSlice(0);
    } else if (key === "End") {
      setSlice(Number.MAX_SAFE_INTEGER);
    } else if (key === "r" || key === "R") {
      choose("real");
    } else if (key === "s" || key === "S") {
      choose("synthetic");
    } else if (key === "Enter") {
      submit();
    } else if (key === "i" || key === "I") {
      smooth = !smooth;
      $("interp-label").textContent = smooth ? "smooth" : "pixels";
      draw();
    } else {
      return;
    }
    event.preventDefault();
  });

  $("canvas-wrap").addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.deltaY !== 0) setSlice(slice + (event.deltaY < 0 ? 1 : -1));
  }, { passive: false });

  slider.addEventListener("input", () => setSlice(Number(slider.value) - 1));
  $("prev-slice").addEventListener("click", () => setSlice(slice - 1));
  $("next-slice").addEventListener("click", () => setSlice(slice + 1));
  for (const b of choiceButtons) b.addEventListener("click", () => choose(b.dataset.answer));
  submitButton.addEventListener("click", submit);
  window.addEventListener("resize", resizeCanvas);

  // Buttons keep no keyboard focus, so Enter never "clicks" a focused button twice.
  for (const b of document.querySelectorAll("button")) {
    b.addEventListener("mousedown", (event) => event.preventDefault());
  }

  load();
})();
