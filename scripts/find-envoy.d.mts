/** Types for find-envoy.mjs (imported by the TypeScript test helpers). */

export declare const LOCAL_ENVOY_PYTHONPATH: string;
export declare const ENVOY_INSTALL_HINT: string;
export declare function isExecutableFile(file: string): boolean;
export declare function findEnvoy(): string | undefined;
