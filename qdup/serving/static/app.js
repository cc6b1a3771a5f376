// The qdup page: calls the server's own /v1 API; no asset from anywhere else.
"use strict";

const $ = (id) => document.getElementById(id);

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  return { status: response.status, data };
}

function showError(el, message) {
  el.textContent = message;
  el.hidden = false;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    const facts = await response.json();
    $("model-version").textContent = facts.version || "(no model loaded)";
    const aliases = $("model-aliases");
    aliases.replaceChildren(...(facts.aliases || []).map((a) => {
      const span = document.createElement("span");
      span.textContent = a;
      return span;
    }));
  } catch (e) {
    $("model-version").textContent = "(server unreachable)";
  }
}

$("pair-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("compare");
  const error = $("pair-error");
  error.hidden = true;
  button.disabled = true;
  try {
    const { status, data } = await post("/v1/similarity", { question1: $("question1").value, question2: $("question2").value });
    if (status !== 200) {
      $("pair-result").hidden = true;
      showError(error, data.error || `HTTP ${status}`);
      return;
    }
    const dup = data.duplicate;
    const verdict = $("verdict");
    verdict.textContent = dup ? "Duplicate" : "Not a duplicate";
    verdict.className = "verdict " + (dup ? "dup" : "nodup");
    $("similarity").textContent = data.similarity.toFixed(4);
    $("threshold").textContent = data.threshold.toFixed(4);
    $("decision").textContent = dup ? "duplicate (similarity \u2265 threshold)" : "not a duplicate (similarity < threshold)";
    $("version").textContent = data.version;
    // The cosine lies in [-1, 1]; the gauge shows it on that scale, the mark at the threshold.
    $("gauge-fill").style.width = `${((data.similarity + 1) / 2) * 100}%`;
    $("gauge-mark").style.left = `calc(${((data.threshold + 1) / 2) * 100}% - 1px)`;
    $("pair-result").hidden = false;
    if ($("model-version").textContent !== data.version) loadModel();
  } catch (e) {
    showError(error, `request failed: ${e}`);
  } finally {
    button.disabled = false;
  }
});

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const note = $("search-note");
  const hits = $("hits");
  note.hidden = true;
  hits.replaceChildren();
  const { status, data } = await post("/v1/search", { question: $("query").value, k: 10 });
  if (status !== 200) {
    showError(note, data.error || `HTTP ${status}`);
    return;
  }
  if (!data.results.length) showError(note, "no indexed question found");
  hits.replaceChildren(...data.results.map((hit) => {
    const li = document.createElement("li");
    li.textContent = hit.question;
    const sim = document.createElement("span");
    sim.className = "sim mono";
    sim.textContent = hit.similarity.toFixed(3);
    li.append(sim);
    return li;
  }));
  note.textContent = `answered by ${data.version}`;
  note.hidden = false;
});

loadModel();
