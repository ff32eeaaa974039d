// Runs in the app page (gr.HTML js_on_load of the map; see app/page.py). The map lives in a
// sandboxed <iframe srcdoc>; a rectangle drawn on it (map_region.js) arrives as a message,
// which becomes a ``select`` event of the map component: index = [south, west, north, east]
// in the map's coordinates (lat/lon, or -row/col in pixel space).
window.addEventListener('message', (event) => {
  const frame = element.querySelector('iframe');
  const data = event.data;
  if (!frame || event.source !== frame.contentWindow || !data || data.kind !== 'earthgpt-map-region') return;
  trigger('select', { index: [data.south, data.west, data.north, data.east], value: 'region' });
});
