type Listener<T> = (event: T) => void;
export declare class Emitter<E> {
    private listeners;
    on<K extends keyof E>(type: K, fn: Listener<E[K]>): () => void;
    off<K extends keyof E>(type: K, fn: Listener<E[K]>): void;
    protected emit<K extends keyof E>(type: K, event: E[K]): void;
}
export {};
