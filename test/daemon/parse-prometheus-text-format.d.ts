declare module 'parse-prometheus-text-format' {
  interface Sample { value: string; labels?: Record<string, string> }
  interface Family { name: string; help: string; type: 'COUNTER' | 'GAUGE' | 'SUMMARY' | 'HISTOGRAM' | 'UNTYPED'; metrics: Sample[] }
  function parse(text: string): Family[];
  export = parse;
}
