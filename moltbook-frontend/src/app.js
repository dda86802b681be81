"use strict";
(function () {
  const cfg = window.MOLTBOOK_CONFIG;
  const api = (path) => cfg.apiBaseUrl.replace(/\/$/, "") + path;
  const $ = (id) => document.getElementById(id);

  function render(posts) {
    const list = $("posts");
    list.replaceChildren(...posts.map((p) => {
      const li = document.createElement("li");
      li.textContent = `${p.author}: ${p.body} (${p.likes} likes)`;
      return li;
    }));
  }

  async function refresh() {
    try {
      const resp = await fetch(api("/v1/posts"));
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      render((await resp.json()).posts);
      $("status").textContent = "";
    } catch (err) {
      $("status").textContent = `cannot reach the API at ${cfg.apiBaseUrl}: ${err.message}`;
    }
  }

  $("new-post").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    await fetch(api("/v1/posts"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ author: form.get("author"), body: form.get("body") }),
    });
    event.target.reset();
    refresh();
  });

  $("version").textContent = `v${cfg.version}`;
  refresh();
})();
