// Runs inside the map page (app/maps.py): a "Draw a region" button; a box dragged on the map
// is kept on screen and posted to the page that holds the map as
// {kind: 'earthgpt-map-region', south, west, north, east} (Leaflet lat/lng of the map's CRS).
function earthgptRegionDraw(map) {
  let active = false;
  let start = null;
  let box = null;
  const style = { color: '#ffffff', weight: 2, dashArray: '6 4', fill: false, interactive: false };

  const Button = L.Control.extend({
    options: { position: 'topleft' },
    onAdd: function () {
      const bar = L.DomUtil.create('div', 'leaflet-bar');
      const link = L.DomUtil.create('a', 'earthgpt-draw-region', bar);
      link.href = '#';
      link.title = 'Draw a region: drag a box on the map';
      link.setAttribute('role', 'button');
      link.setAttribute('aria-label', 'Draw a region');
      link.innerHTML = '&#9633;';
      link.style.fontSize = '20px';
      L.DomEvent.disableClickPropagation(bar);
      L.DomEvent.on(link, 'click', (e) => { L.DomEvent.preventDefault(e); setActive(!active); });
      this.link = link;
      return bar;
    },
  });
  const button = new Button().addTo(map);

  function setActive(on) {
    active = on;
    map.getContainer().style.cursor = on ? 'crosshair' : '';
    button.link.style.background = on ? '#ffe08a' : '';
    if (on) { map.dragging.disable(); map.boxZoom.disable(); } else { map.dragging.enable(); map.boxZoom.enable(); }
  }

  map.on('mousedown', (e) => {
    if (!active) return;
    start = e.latlng;
    if (box) map.removeLayer(box);
    box = L.rectangle(L.latLngBounds(start, start), style).addTo(map);
  });
  map.on('mousemove', (e) => {
    if (active && start) box.setBounds(L.latLngBounds(start, e.latlng));
  });
  map.on('mouseup', (e) => {
    if (!active || !start) return;
    const bounds = L.latLngBounds(start, e.latlng);
    start = null;
    setActive(false);
    if (bounds.getNorth() === bounds.getSouth() || bounds.getEast() === bounds.getWest()) {
      map.removeLayer(box);
      box = null;
      return;
    }
    box.setBounds(bounds);
    parent.postMessage({
      kind: 'earthgpt-map-region', south: bounds.getSouth(), west: bounds.getWest(),
      north: bounds.getNorth(), east: bounds.getEast(),
    }, '*');
  });
}
