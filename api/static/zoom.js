// Zoom and pan of an image within its stage, fit to it at scale 1: by a factor (buttons, keys),
// a double click, the wheel, a drag to pan once zoomed, two fingers to pinch (pointer events,
// with touch-action: none on the stage); a swipe while it is not zoomed is handed on.

const MAX_SCALE = 8;
const SWIPE_PX = 60;

const clamp = (value, low, high) => Math.min(high, Math.max(low, value));
const distance = (a, b) => Math.hypot(a.x - b.x, a.y - b.y);
const middle = (a, b) => ({ x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 });

export class Zoom {
  constructor(stage, image, { onSwipe = () => {}, onChange = () => {} } = {}) {
    Object.assign(this, { stage, image, onSwipe, onChange, scale: 1, x: 0, y: 0 });
    this.pointers = new Map(); // pointerId -> { x, y }
    this.gesture = null;
    image.draggable = false; // a drag pans; it does not carry the image off
    stage.addEventListener("dblclick", (event) => this.toggleAt(event.clientX, event.clientY));
    stage.addEventListener("wheel", (event) => {
      event.preventDefault();
      this.zoomAt(this.scale * Math.exp(-event.deltaY * 0.002), event.clientX, event.clientY);
    }, { passive: false });
    stage.addEventListener("pointerdown", (event) => this.down(event));
    stage.addEventListener("pointermove", (event) => this.move(event));
    for (const name of ["pointerup", "pointercancel"]) stage.addEventListener(name, (event) => this.up(event));
  }

  reset() {
    Object.assign(this, { scale: 1, x: 0, y: 0 });
    this.apply();
  }

  // Zoomed by `factor` about the stage's centre.
  by(factor) {
    const box = this.stage.getBoundingClientRect();
    this.zoomAt(this.scale * factor, box.left + box.width / 2, box.top + box.height / 2);
  }

  // Fit to the stage, or (when fit) close enough to see its pixels, about a point.
  toggleAt(clientX, clientY) {
    if (this.scale > 1) this.reset();
    else this.zoomAt(Math.max(2, this.image.naturalWidth / Math.max(1, this.image.offsetWidth)), clientX, clientY);
  }

  // To `scale`, keeping the image's point under (clientX, clientY) where it is.
  zoomAt(scale, clientX, clientY) {
    const next = clamp(scale, 1, MAX_SCALE);
    const box = this.stage.getBoundingClientRect();
    const px = clientX - (box.left + box.width / 2);
    const py = clientY - (box.top + box.height / 2);
    this.x = px - ((px - this.x) / this.scale) * next;
    this.y = py - ((py - this.y) / this.scale) * next;
    this.scale = next;
    this.apply();
  }

  apply() {
    // No further than the image's edge: it never leaves a gap it could fill.
    const spareX = Math.max(0, (this.image.offsetWidth * this.scale - this.stage.clientWidth) / 2);
    const spareY = Math.max(0, (this.image.offsetHeight * this.scale - this.stage.clientHeight) / 2);
    this.x = clamp(this.x, -spareX, spareX);
    this.y = clamp(this.y, -spareY, spareY);
    this.image.style.transform = this.scale === 1 ? "" : `translate(${this.x}px, ${this.y}px) scale(${this.scale})`;
    this.stage.classList.toggle("zoomed", this.scale > 1);
    this.onChange(this.scale);
  }

  begin() {
    const [first, second] = [...this.pointers.values()];
    this.gesture = second
      ? { pinch: true, distance: distance(first, second), scale: this.scale }
      : { pinch: false, start: { ...first }, x: this.x, y: this.y };
  }

  down(event) {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    try {
      this.stage.setPointerCapture(event.pointerId); // the gesture goes on outside the stage
    } catch {
      // a pointer the browser no longer knows of (a synthetic one): followed within the stage
    }
    this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (this.pointers.size <= 2) this.begin();
  }

  move(event) {
    if (!this.pointers.has(event.pointerId) || !this.gesture) return;
    this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    const [first, second] = [...this.pointers.values()];
    if (this.gesture.pinch && second) {
      const centre = middle(first, second);
      this.zoomAt(this.gesture.scale * (distance(first, second) / Math.max(1, this.gesture.distance)), centre.x, centre.y);
    } else if (!this.gesture.pinch && this.scale > 1) {
      this.x = this.gesture.x + (first.x - this.gesture.start.x);
      this.y = this.gesture.y + (first.y - this.gesture.start.y);
      this.apply();
    }
  }

  up(event) {
    const point = this.pointers.get(event.pointerId);
    if (!point) return;
    this.pointers.delete(event.pointerId);
    const gesture = this.gesture;
    if (gesture && !gesture.pinch && this.scale === 1 && event.type === "pointerup") {
      const dx = point.x - gesture.start.x;
      const dy = point.y - gesture.start.y;
      if (Math.abs(dx) > SWIPE_PX && Math.abs(dx) > 1.5 * Math.abs(dy)) this.onSwipe(dx < 0 ? 1 : -1);
    }
    // One finger left of a pinch pans from where it is.
    if (this.pointers.size) this.begin();
    else this.gesture = null;
  }
}
