/** Programs to start from, each with the settings that make its point. */

import type { FormValues } from "./evaluation-form";

export interface Example {
  id: string;
  title: string;
  /** what the example shows, for the button's description. */
  summary: string;
  values: Partial<FormValues> & { code: string };
}

export const EXAMPLES: readonly Example[] = [
  {
    id: "hello",
    title: "Hello world",
    summary: "prints a greeting, then a few lines slowly, so you can watch output stream in",
    values: {
      code: [
        "import time",
        "",
        'print("Hello, world!", flush=True)',
        "for step in range(1, 6):",
        "    time.sleep(0.3)",
        '    print(f"step {step} of 5", flush=True)',
        "",
      ].join("\n"),
      runtime: "python",
      timeoutSeconds: "",
    },
  },
  {
    id: "exception",
    title: "An exception",
    summary: "raises ZeroDivisionError: a traceback on stderr and a non-zero exit",
    values: {
      code: [
        "def average(values):",
        "    return sum(values) / len(values)",
        "",
        'print("averaging an empty list...", flush=True)',
        "print(average([]))",
        "",
      ].join("\n"),
      runtime: "python",
      timeoutSeconds: "",
    },
  },
  {
    id: "infinite-loop",
    title: "Infinite loop",
    summary: "never ends: cancel it, or it is stopped at the wall-clock limit",
    values: {
      code: [
        "import itertools, time",
        "",
        "for tick in itertools.count():",
        '    print(f"tick {tick}", flush=True)',
        "    time.sleep(0.5)",
        "",
      ].join("\n"),
      runtime: "python",
      timeoutSeconds: "20",
    },
  },
  {
    id: "memory-bomb",
    title: "Memory bomb",
    summary: "allocates 32 MiB at a time until the memory limit stops it",
    values: {
      code: [
        "blocks = []",
        "while True:",
        "    blocks.append(bytearray(32 * 1024 * 1024))",
        '    print(f"holding {len(blocks) * 32} MiB", flush=True)',
        "",
      ].join("\n"),
      runtime: "python",
      memoryMiB: "128",
      timeoutSeconds: "",
    },
  },
  {
    id: "numpy",
    title: "NumPy job",
    summary: "linear algebra in the python-ml runtime",
    values: {
      code: [
        "import numpy as np",
        "",
        "rng = np.random.default_rng(seed=7)",
        "a = rng.standard_normal((400, 400))",
        "eigenvalues = np.linalg.eigvalsh(a @ a.T)",
        'print("numpy", np.__version__)',
        'print("largest eigenvalues:", np.round(eigenvalues[-3:], 2))',
        "",
      ].join("\n"),
      runtime: "python-ml",
      timeoutSeconds: "",
    },
  },
  {
    id: "binary",
    title: "Binary output",
    summary: "writes every byte value and terminal escapes: shown safely, never obeyed",
    values: {
      code: [
        "import sys",
        "",
        'sys.stdout.write("\\x1b[31mnot red\\x1b[0m \\u202eevil\\u202c\\n")',
        "sys.stdout.flush()",
        "sys.stdout.buffer.write(bytes(range(256)))",
        "",
      ].join("\n"),
      runtime: "python",
      timeoutSeconds: "",
    },
  },
];
