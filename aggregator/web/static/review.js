// Keyboard and small glue for the review page. No inline scripts: the page's CSP allows scripts
// from this server only. Every decision is a click on a card's own button, so the keyboard and
// the mouse take the same path (htmx posts the card's form).
(function () {
  "use strict";

  let current = 0;

  function cards() {
    return Array.from(document.querySelectorAll("#queue .card"));
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : null;
  }

  function flash(message, isError) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = isError ? "error shown" : "shown";
    window.clearTimeout(flash.timer);
    flash.timer = window.setTimeout(function () { box.className = ""; }, isError ? 8000 : 3000);
  }

  function select(index, scroll) {
    const all = cards();
    all.forEach(function (card) { card.classList.remove("current"); });
    if (all.length === 0) { current = 0; return; }
    current = Math.max(0, Math.min(index, all.length - 1));
    const card = all[current];
    card.classList.add("current");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function currentCard() {
    return cards()[current] || null;
  }

  function press(selector) {
    const card = currentCard();
    const button = card ? card.querySelector(selector) : null;
    if (button && !button.disabled) {
      button.click();
      return true;
    }
    if (!csrfToken()) flash("read-only: sign in to decide", true);
    return false;
  }

  function click(id) {
    const button = document.getElementById(id);
    if (button && !button.disabled) button.click();
    else if (!csrfToken()) flash("read-only: sign in to decide", true);
  }

  function toggleHelp() {
    const help = document.getElementById("help");
    if (!help) return;
    if (help.open) help.close(); else help.showModal();
  }

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const key = event.key;
    let handled = true;
    if (key === "j") select(current + 1, true);
    else if (key === "k") select(current - 1, true);
    else if (key === "a") press("button[data-key=a]");
    else if (key === "r") press("button[data-key=r]");
    else if (/^[1-9]$/.test(key)) press('button[data-move="' + key + '"]');
    else if (key === "u") click("undo");
    else if (key === "A") click("bulk-accept");
    else if (key === "R") click("bulk-reject");
    else if (key === "x") {
      const card = currentCard();
      const box = card ? card.querySelector("input.pick") : null;
      if (box) box.checked = !box.checked;
    } else if (key === "o") {
      const card = currentCard();
      const link = card ? card.querySelector("a.title") : null;
      if (link) window.open(link.href, "_blank", "noopener,noreferrer");
    } else if (key === "/") document.getElementById("search").focus();
    else if (key === "?") toggleHelp();
    else handled = false;
    if (handled) event.preventDefault();
  }

  document.addEventListener("keydown", onKey);

  document.addEventListener("click", function (event) {
    if (event.target.closest("#keys-button")) { toggleHelp(); return; }
    const card = event.target.closest("#queue .card");
    if (card) select(cards().indexOf(card), false);
  });

  // The card forms are posted by htmx; Enter in a reason box must not reload the page.
  document.addEventListener("submit", function (event) {
    if (event.target.matches("form.actions, #bulk")) event.preventDefault();
  });

  document.addEventListener("htmx:configRequest", function (event) {
    const token = csrfToken();
    if (token) event.detail.headers["X-CSRF-Token"] = token;
    // "more" continues after the cards still on the page (decided ones have left the queue).
    if (event.detail.elt.hasAttribute("data-more")) event.detail.parameters.offset = String(cards().length);
  });

  document.addEventListener("htmx:afterSettle", function () { select(current, false); });

  document.addEventListener("htmx:responseError", function (event) {
    const text = event.detail.xhr.responseText || event.detail.xhr.statusText;
    flash(text.slice(0, 300), true);
  });

  document.body.addEventListener("flash", function (event) {
    flash(String(event.detail.value), false);
  });

  select(0, false);
})();
