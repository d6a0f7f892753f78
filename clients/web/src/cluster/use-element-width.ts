import { useEffect, useRef, useState, type RefObject } from "react";

/** useElementWidth measures an element's content width and follows its resizes. */
export function useElementWidth<T extends HTMLElement>(fallback: number): [RefObject<T | null>, number] {
  const element = useRef<T>(null);
  const [width, setWidth] = useState(fallback);
  useEffect(() => {
    const target = element.current;
    if (!target || typeof ResizeObserver === "undefined") return undefined;
    const observer = new ResizeObserver(([entry]) => {
      if (entry) setWidth(Math.floor(entry.contentRect.width));
    });
    observer.observe(target);
    return () => observer.disconnect();
  }, []);
  return [element, width];
}
