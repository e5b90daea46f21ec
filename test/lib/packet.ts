// The packet builder lives in src/lab/packet.ts (the lab's generator builds its frames with it);
// tests import it from here.
export * from '../../src/lab/packet';
