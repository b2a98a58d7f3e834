// Navigation, scaling to the window, and a layout check that the tests read back with `chromium --dump-dom`.
(function () {
  const slides = Array.from(document.querySelectorAll(".slide"));
  const boxes = (s) => [s, ...s.querySelectorAll("header, .content, .cols, .text, .stats, figure, .code .line, td")];
  const overflowing = (s) => boxes(s).some((b) => b.scrollHeight > b.clientHeight + 1 || b.scrollWidth > b.clientWidth + 1);

  // Shrink a slide's fonts a little where its text does not fit (long config text); report what still does not.
  const overflow = [], fit = [];
  slides.forEach((s, i) => {
    s.classList.add("measuring");
    let fs = 1;
    while (overflowing(s) && fs > 0.76) {
      fs = Math.round((fs - 0.04) * 100) / 100;
      s.style.setProperty("--fs", fs);
    }
    if (overflowing(s)) { s.classList.add("overflow"); overflow.push(i + 1); }
    fit.push(fs);
    s.classList.remove("measuring");
  });
  document.body.dataset.slides = slides.length;
  document.body.dataset.overflow = JSON.stringify(overflow);
  document.body.dataset.fit = JSON.stringify(fit);

  let current = 0;
  const show = (n) => {
    current = Math.max(0, Math.min(slides.length - 1, n));
    slides.forEach((s, i) => s.classList.toggle("active", i === current));
    if (location.hash !== "#" + (current + 1)) history.replaceState(null, "", "#" + (current + 1));
  };
  const fromHash = () => { const n = parseInt(location.hash.slice(1), 10); show(isNaN(n) ? 0 : n - 1); };
  const scale = () => document.documentElement.style.setProperty("--scale",
    Math.min(window.innerWidth / 1280, window.innerHeight / 720));
  document.addEventListener("keydown", (e) => {
    const next = ["ArrowRight", "ArrowDown", "PageDown", " ", "Enter"], prev = ["ArrowLeft", "ArrowUp", "PageUp", "Backspace"];
    if (next.includes(e.key)) show(current + 1);
    else if (prev.includes(e.key)) show(current - 1);
    else if (e.key === "Home") show(0);
    else if (e.key === "End") show(slides.length - 1);
    else return;
    e.preventDefault();
  });
  document.addEventListener("click", (e) => show(current + (e.clientX > window.innerWidth / 2 ? 1 : -1)));
  window.addEventListener("hashchange", fromHash);
  window.addEventListener("resize", scale);
  scale();
  fromHash();
  document.body.dataset.ready = "1";
})();
