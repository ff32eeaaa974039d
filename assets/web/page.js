// Runs once when the app's page loads (gr.HTML js_on_load of the title; see app/page.py).
// The image annotator fits its image to the width of its column only; a tall column would push
// the conversation's neighbour below the fold. Cap the canvas width so the whole image fits
// between its top and the bottom of the viewport, and redo it whenever the image, the canvas
// or the window changes size.
(function () {
  const TOOLBAR = 56;  // the annotator's tool buttons under the canvas, and a margin
  const MIN_HEIGHT = 240;
  let pending = false;

  function fit() {
    pending = false;
    const box = document.querySelector('#annotator .canvas-container');
    const canvas = box && box.querySelector('canvas');
    if (!canvas || !canvas.width || !canvas.height || !box.offsetParent) return;
    const top = box.getBoundingClientRect().top + window.scrollY;
    const room = Math.max(MIN_HEIGHT, window.innerHeight - top - TOOLBAR);
    const width = Math.floor(room * canvas.width / canvas.height);
    const wanted = width + 'px';
    if (canvas.height > room + 1 || (canvas.height < room - 1 && box.clientWidth < box.parentElement.clientWidth)) {
      if (box.style.maxWidth !== wanted) box.style.maxWidth = wanted;
    }
  }

  function later() {
    if (!pending) { pending = true; requestAnimationFrame(fit); }
  }

  new MutationObserver(later).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ['width', 'height', 'class', 'style', 'hidden'],
  });
  window.addEventListener('resize', later);
  later();
})();
