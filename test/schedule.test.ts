import { alphaBars, ddimWeights, makeSchedule, samplingTimesteps, type SchedulerConfig } from '../src';

const sd1: SchedulerConfig = {
  num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear',
  steps_offset: 1, set_alpha_to_one: false, timestep_spacing: 'leading',
};

describe('schedule', () => {
  test('scaled_linear alpha-bar matches the spec values to 1e-6', () => {
    const alphaBar = alphaBars(sd1);
    const expected: Record<number, number> = { 0: 0.99915, 1: 0.998296, 900: 0.014151, 950: 0.008247, 981: 0.0057755, 999: 0.0046601 };
    for (const [t, value] of Object.entries(expected)) expect(Math.abs(alphaBar[Number(t)] - value)).toBeLessThanOrEqual(1e-6);
  });

  test('linear betas run evenly from beta_start to beta_end', () => {
    const alphaBar = alphaBars({ ...sd1, beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02 });
    expect(alphaBar[0]).toBeCloseTo(1 - 0.0001, 12);
    expect(alphaBar[999] / alphaBar[998]).toBeCloseTo(1 - 0.02, 12);
    expect(alphaBar[500] / alphaBar[499]).toBeCloseTo(1 - (0.0001 + (500 / 999) * (0.02 - 0.0001)), 12);
  });

  test('leading spacing with steps_offset 1 gives 981, 961, ..., 1 at N = 50', () => {
    expect(samplingTimesteps(sd1, 50)).toEqual(Array.from({ length: 50 }, (_, i) => 981 - 20 * i));
  });

  test('trailing and linspace spacings match diffusers', () => {
    expect(samplingTimesteps({ ...sd1, timestep_spacing: 'trailing' }, 10)).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    expect(samplingTimesteps({ ...sd1, timestep_spacing: 'linspace' }, 10)).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    expect(samplingTimesteps({ ...sd1, timestep_spacing: 'trailing' }, 3)).toEqual([999, 666, 332]);
  });

  test('inversion runs the sampling timesteps backwards, from the final alpha at the first step', () => {
    const schedule = makeSchedule(sd1, 50);
    const alphaBar = alphaBars(sd1);
    expect(schedule.inversion.map((s) => s.timestep)).toEqual([...schedule.timesteps].reverse());
    expect(schedule.inversion[0]).toEqual({ index: 0, timestep: 1, from: alphaBar[0], to: alphaBar[1] });
    expect(schedule.inversion[49]).toEqual({ index: 49, timestep: 981, from: alphaBar[961], to: alphaBar[981] });
    expect(schedule.sampling[0]).toEqual({ index: 0, timestep: 981, from: alphaBar[981], to: alphaBar[961] });
    expect(makeSchedule({ ...sd1, set_alpha_to_one: true }, 50).sampling[49].to).toBe(1);
  });

  test('the DDIM step moves sqrt(a) x0 + sqrt(1 - a) eps to sqrt(b) x0 + sqrt(1 - b) eps, both ways', () => {
    const [x0, eps, a, b] = [0.7, -1.3, 0.9, 0.2];
    const [wx, we] = ddimWeights(a, b);
    const x = Math.sqrt(a) * x0 + Math.sqrt(1 - a) * eps;
    const moved = wx * x + we * eps;
    expect(moved).toBeCloseTo(Math.sqrt(b) * x0 + Math.sqrt(1 - b) * eps, 12);
    const [bx, be] = ddimWeights(b, a);
    expect(bx * moved + be * eps).toBeCloseTo(x, 12);
  });

  test('bad step counts are clear errors', () => {
    expect(() => makeSchedule(sd1, 0)).toThrow('steps must be an integer from 1 to 1000, not 0');
    expect(() => makeSchedule(sd1, 2.5)).toThrow(/steps must be an integer/);
  });
});
