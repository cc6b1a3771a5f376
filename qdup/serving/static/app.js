// The qdup page: calls the server's own /v1 API; no asset from anywhere else.
"use strict";

const $ = (id) => document.getElementById(id);

async function post(path, body, headers = {}) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
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
    $("feedback-token-row").hidden = !(facts.feedback && facts.feedback.token_required);
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

// Feedback: a person confirms (\u2713) or rejects (\u2717) a pair the served version answered; the row is stored with
// source=page and the version that answered, and what was recorded is shown beside the buttons.
async function sendFeedback(question1, question2, version, label, status) {
  status.textContent = "recording\u2026";
  status.className = "fb-status";
  const token = $("feedback-token").value.trim();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const { status: code, data } = await post("/v1/feedback", { question1, question2, label, version, source: "page" }, headers);
    if (code !== 201) {
      status.textContent = data.error || `HTTP ${code}`;
      status.className = "fb-status error";
      return;
    }
    status.textContent = `recorded: ${label === "duplicate" ? "duplicate" : "not a duplicate"} (#${data.id}, ${data.recorded.version})`;
    status.className = "fb-status recorded";
  } catch (e) {
    status.textContent = `request failed: ${e}`;
    status.className = "fb-status error";
  }
}

function feedbackButtons(question1, question2, version) {
  const box = document.createElement("span");
  box.className = "feedback";
  const status = document.createElement("span");
  status.className = "fb-status";
  status.setAttribute("role", "status");
  const make = (label, text, title) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = label === "duplicate" ? "fb-yes" : "fb-no";
    button.textContent = text;
    button.title = title;
    button.setAttribute("aria-label", title);
    button.addEventListener("click", () => sendFeedback(question1, question2, version, label, status));
    return button;
  };
  box.append(make("duplicate", "\u2713", "yes, a duplicate"), make("not_duplicate", "\u2717", "no, not a duplicate"), status);
  return box;
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
    $("pair-feedback").replaceChildren(feedbackButtons($("question1").value, $("question2").value, data.version));
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
  const query = $("query").value;
  const { status, data } = await post("/v1/search", { question: query, k: 10 });
  if (status !== 200) {
    showError(note, data.error || `HTTP ${status}`);
    return;
  }
  if (!data.results.length) showError(note, "no indexed question found");
  const kinds = { cosine: "cosine", bm25: "BM25", rrf: "RRF", weighted: "weighted", reranker: "reranker" };
  const kind = kinds[data.score_kind] || data.score_kind;
  const rule = data.duplicate_by === "reranker_score" ? "reranker score" : "cosine";
  // Hits come ranked by `score`; the cosine is shown beside it, named, because it is not what ordered them.
  hits.replaceChildren(...data.results.map((hit) => {
    const li = document.createElement("li");
    li.className = hit.duplicate ? "hit dup" : "hit";
    const text = document.createElement("span");
    text.className = "question";
    text.textContent = hit.question;
    const meta = document.createElement("span");
    meta.className = "meta mono";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${hit.score.toFixed(4)} (${kind})`;
    meta.append(score);
    if (data.score_kind !== "cosine") {
      const cosine = document.createElement("span");
      cosine.className = "cosine";
      cosine.textContent = `cosine ${hit.similarity.toFixed(3)}`;
      meta.append(cosine);
    }
    if (hit.reranker_score !== null && hit.reranker_score !== undefined && data.score_kind !== "reranker") {
      const rr = document.createElement("span");
      rr.className = "reranker";
      rr.textContent = `reranker ${hit.reranker_score.toFixed(3)}`;
      meta.append(rr);
    }
    if (hit.duplicate) {
      const mark = document.createElement("span");
      mark.className = "dupmark";
      mark.textContent = "duplicate";
      meta.append(mark);
    }
    li.append(text, meta, feedbackButtons(query, hit.question, data.version));
    return li;
  }));
  note.textContent = `answered by ${data.version}: ${data.method} search, ranked by ${kind} score; `
    + `marked duplicate when the ${rule} \u2265 ${data.duplicate_threshold.toFixed(4)}`;
  note.hidden = false;
});

loadModel();
