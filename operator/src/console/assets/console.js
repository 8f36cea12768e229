// Live updates, countdowns and the CA file picker. No framework: the pages work without it.
"use strict";

// A live region re-fetches its page's live part whenever the server says something changed.
function followLive(region) {
  const source = new EventSource(region.dataset.live);
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { headers: { "X-Console-Fragment": "live" }, credentials: "same-origin" });
      if (response.ok) {
        const html = await response.text();
        if (html !== region.dataset.last) {
          const focused = document.activeElement && document.activeElement.id;
          region.innerHTML = html;
          region.dataset.last = html;
          if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
          countdowns();
        }
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  source.addEventListener("changed", refresh);
  source.addEventListener("problem", (e) => { region.setAttribute("data-problem", e.data); });
}

function countdowns() {
  for (const el of document.querySelectorAll("time[data-countdown]")) {
    const left = Math.round((Date.parse(el.getAttribute("datetime")) - Date.now()) / 1000);
    if (left <= 0) { el.textContent = "done"; continue; }
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    el.textContent = (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s left";
  }
}

// A file chosen for a PEM field is read into its text area.
function filePickers() {
  for (const input of document.querySelectorAll("input[type=file][data-fill]")) {
    input.addEventListener("change", async () => {
      const file = input.files && input.files[0];
      if (file) document.getElementById(input.dataset.fill).value = await file.text();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-live]")) {
    region.dataset.last = region.innerHTML;
    followLive(region);
  }
  countdowns();
  setInterval(countdowns, 1000);
  filePickers();
});
