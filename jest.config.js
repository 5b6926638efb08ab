module.exports = {
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json' }] },
  testEnvironment: 'node',
  testTimeout: 60000,
  globalSetup: '<rootDir>/test/browser-setup.js',
};
