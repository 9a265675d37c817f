// A small typed event emitter: `on` returns the function that removes the listener.

type Listener<T> = (event: T) => void;

export class Emitter<E> {
  private listeners: { [K in keyof E]?: Set<Listener<E[K]>> } = {};

  on<K extends keyof E>(type: K, fn: Listener<E[K]>): () => void {
    (this.listeners[type] ??= new Set()).add(fn);
    return () => this.off(type, fn);
  }

  off<K extends keyof E>(type: K, fn: Listener<E[K]>): void {
    this.listeners[type]?.delete(fn);
  }

  protected emit<K extends keyof E>(type: K, event: E[K]): void {
    for (const fn of this.listeners[type] ?? []) {
      try {
        fn(event);
      } catch (e) {
        // A listener's bug must not break the client's own bookkeeping.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
